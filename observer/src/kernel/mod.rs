//! Stage 1 — kernel: load the embedded object into the kernel with offsets from BTF, write the
//! runtime filter, attach the plan and report what attached; read the ring and the exact counters.

mod attach;
pub mod btf;
pub mod counters;
pub mod deletes;
pub mod object;
pub mod plan;
pub mod preflight;
pub mod reader;
pub mod tracefs;

use std::{path::PathBuf, time::Instant};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
};
use observer_common::config::{DirKey, EntryCounts, ErrorKey, RuntimeConfig};

use crate::config::ProbeMode;

use observer_common::names::{
    GLOBAL_FEATURES, GLOBAL_OFFSETS, MAP_CONFIG, MAP_COUNTERS, MAP_DELETES_BY_DIR,
    MAP_DELETES_BY_MOUNT, MAP_DELETES_BY_PROC, MAP_DELETES_PENDING, MAP_ERRORS, MAP_EVENTS,
    MAP_EXCLUDE_CGROUPS, MAP_EXCLUDE_COMMS, MAP_HEARTBEAT_FILES, MAP_KILLED, MAP_NR_TO_ID,
    MAP_PROC_NAMES, MAP_WATCH_DEVS, SYS_EXIT_RET_OFFSET,
};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "this observer binary carries no eBPF programs (it was built without bpf-linker); \
         build it with `cargo xtask build` or run `cargo xtask run`"
    )]
    StubObject,
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("a program-loading thread panicked")]
    LoadPanicked,
    #[error("map {0}: {1}")]
    Map(&'static str, aya::maps::MapError),
    #[error("program {program}: {source}")]
    Program {
        program: String,
        source: aya::programs::ProgramError,
    },
    #[error("program {program}: the kernel has no hook {hook}")]
    MissingHook { program: String, hook: String },
    #[error(
        "probe mode fexit: the kernel refused program {program} (fexit on {function}): {reason}; \
         use --probe-mode auto or tracepoint on this kernel"
    )]
    FexitRefused {
        program: String,
        function: String,
        reason: String,
    },
    #[error(
        "program {program}: tracepoint {hook} has `ret` at {found:?}, the programs expect offset \
         {SYS_EXIT_RET_OFFSET} size 8"
    )]
    Format {
        program: String,
        hook: String,
        found: Option<(usize, usize)>,
    },
}

/// What the daemon asks of the probes.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub mode: ProbeMode,
    pub btf_path: PathBuf,
    pub mount_tracefs: bool,
    pub ring_buffer_bytes: u32,
    pub runtime: RuntimeConfig,
    pub filters: crate::config::Filters,
    /// `FEATURE_*` bits.
    pub features: u32,
}

/// Outcome of one planned program.
#[derive(Clone, Debug)]
pub struct AttachReport {
    pub program: String,
    pub hook: String,
    /// `None`: attached; `Some(reason)`: skipped.
    pub skipped: Option<String>,
}

/// Loaded and attached programs. Dropping it detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    pub mode: &'static str,
    pub reports: Vec<AttachReport>,
    pub attach_time: std::time::Duration,
    /// Where the start-up time went before the programs (the rest is verifying and attaching).
    pub phases: [(&'static str, std::time::Duration); 2],
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// Threads detaching programs at exit (they wait, they do not compute).
const DETACH_THREADS: usize = 16;

/// Unloads one program (detaching its links); a program never loaded is left alone.
fn unload(prog: &mut aya::programs::Program) -> Result<(), aya::programs::ProgramError> {
    use aya::programs::Program as P;
    match prog {
        P::TracePoint(p) => p.unload(),
        P::FExit(p) => p.unload(),
        _ => Ok(()),
    }
}

/// Handles the rest of the pipeline reads.
pub struct ProbeMaps {
    pub events: RingBuf<MapData>,
    pub counters: PerCpuArray<MapData, u64>,
    pub errors: PerCpuHashMap<MapData, ErrorKey, u64>,
    pub deletes_by_proc: PerCpuHashMap<MapData, u32, EntryCounts>,
    pub deletes_by_dir: PerCpuHashMap<MapData, DirKey, EntryCounts>,
    pub deletes_by_mount: PerCpuHashMap<MapData, u32, EntryCounts>,
    pub deletes_pending: PerCpuArray<MapData, observer_common::config::DeletePending>,
    pub proc_names: aya::maps::HashMap<MapData, u32, observer_common::config::ProcName>,
    pub killed: aya::maps::HashMap<MapData, u32, u32>,
    pub heartbeat_files: aya::maps::HashMap<MapData, DirKey, u8>,
    /// The runtime configuration the programs read (changeable without reloading).
    pub config: Array<MapData, RuntimeConfig>,
}

impl Probes {
    pub fn load(opts: &ProbeOptions) -> Result<Self, ProbeError> {
        let started = Instant::now();
        let object = object::bytes()?;
        // btf-rs answers the layout questions, then is dropped before aya parses the BTF once
        // for both the loader and the fexit programs: the two parses never coexist (peak RSS).
        let kernel_btf = btf::open(&opts.btf_path)?;
        let tracefs = tracefs::find_or_mount(opts.mount_tracefs)?;
        let regs_from_stack = !aya::sys::is_helper_supported(
            aya::programs::ProgramType::TracePoint,
            aya::sys::BpfHelper::BPF_FUNC_task_pt_regs,
        )
        .unwrap_or(false);
        if regs_from_stack {
            tracing::info!(
                "kernel lacks bpf_task_pt_regs: reading syscall arguments from the task stack"
            );
        }
        let mut offsets = btf::kernel_offsets(&kernel_btf, regs_from_stack)?;
        io_uring_layout(&tracefs, &mut offsets)?;
        let fexit_params: Vec<Option<usize>> = plan::FEXIT_SET
            .iter()
            .map(|p| btf::func_params(&kernel_btf, p.function))
            .collect();
        // In auto mode, fexit is tried only where this kernel lets a program attach to a VFS
        // function at all (a two-instruction probe): no refused loads, no BTF parse for them.
        let try_fexit = match opts.mode {
            ProbeMode::Tracepoint => false,
            ProbeMode::Fexit => true,
            ProbeMode::Auto => attach::trampolines_allowed(&kernel_btf),
        };
        drop(kernel_btf);
        // aya's loader parses the kernel's BTF itself; a second parse, for attaching fexit
        // programs (or from a non-default path), only when it is needed.
        let sys_btf = opts.btf_path == std::path::Path::new(crate::config::DEFAULT_BTF);
        let aya_btf = (try_fexit || !sys_btf)
            .then(|| aya::Btf::parse_file(&opts.btf_path, aya::Endianness::default()))
            .transpose()
            .map_err(|e| ProbeError::Btf(btf::BtfError::Btf(e.to_string())))?;
        let btf_done = started.elapsed();

        let mut loader = EbpfLoader::new();
        if let Some(b) = &aya_btf {
            loader.btf(Some(b));
        }
        let mut ebpf = loader
            .override_global(GLOBAL_OFFSETS, &offsets, true)
            .override_global(GLOBAL_FEATURES, &opts.features, true)
            .map_max_entries(MAP_EVENTS, opts.ring_buffer_bytes)
            .load(object)?;

        let mut config: Array<_, RuntimeConfig> = Array::try_from(
            ebpf.map_mut(MAP_CONFIG)
                .ok_or(ProbeError::Map(MAP_CONFIG, missing()))?,
        )
        .map_err(|e| ProbeError::Map(MAP_CONFIG, e))?;
        // The clock offset is current from the first call on (the daemon keeps it current).
        let mut runtime = opts.runtime;
        runtime.realtime_offset_ns = crate::node::clock::Clock::new().realtime_offset_ns();
        config
            .set(0, runtime, 0)
            .map_err(|e| ProbeError::Map(MAP_CONFIG, e))?;
        fill_set(&mut ebpf, MAP_WATCH_DEVS, &opts.filters.devs)?;
        fill_set(&mut ebpf, MAP_EXCLUDE_COMMS, &opts.filters.comms)?;
        fill_set(&mut ebpf, MAP_EXCLUDE_CGROUPS, &opts.filters.cgroups)?;
        let maps_done = started.elapsed();

        let mut reports = Vec::new();
        let mut fexit_attached = 0;
        if let Some(aya_btf) = aya_btf.as_ref().filter(|_| try_fexit) {
            for (planned, params) in plan::FEXIT_SET.iter().zip(&fexit_params) {
                let report = attach::fexit(&mut ebpf, *params, aya_btf, planned);
                match (&report.skipped, opts.mode) {
                    (Some(reason), ProbeMode::Fexit) => {
                        return Err(ProbeError::FexitRefused {
                            program: report.program.clone(),
                            function: planned.function.into(),
                            reason: reason.clone(),
                        });
                    }
                    (None, _) => fexit_attached += 1,
                    _ => {}
                }
                reports.push(report);
            }
        }
        if fexit_attached > 0 {
            runtime.flags |= observer_common::config::CONFIG_FEXIT_ACTIVE;
            let map = ebpf
                .map_mut(MAP_CONFIG)
                .ok_or(ProbeError::Map(MAP_CONFIG, missing()))?;
            let mut config: Array<_, RuntimeConfig> =
                Array::try_from(map).map_err(|e| ProbeError::Map(MAP_CONFIG, e))?;
            config
                .set(0, runtime, 0)
                .map_err(|e| ProbeError::Map(MAP_CONFIG, e))?;
            let map = ebpf
                .map_mut(MAP_NR_TO_ID)
                .ok_or(ProbeError::Map(MAP_NR_TO_ID, missing()))?;
            let mut table: Array<_, u32> =
                Array::try_from(map).map_err(|e| ProbeError::Map(MAP_NR_TO_ID, e))?;
            for &(nr, id) in observer_common::syscall::X86_64_NRS {
                table
                    .set(nr, id, 0)
                    .map_err(|e| ProbeError::Map(MAP_NR_TO_ID, e))?;
            }
        }
        let growth = opts.features & observer_common::config::FEATURE_GROWTH != 0;
        reports.extend(attach::tracepoints(&mut ebpf, &tracefs, &offsets, growth)?);
        let mode = match fexit_attached {
            0 => "tracepoint",
            n if n == plan::FEXIT_SET.len() => "fexit",
            _ => "mixed",
        };
        if opts.mode == ProbeMode::Auto && !try_fexit {
            reports.extend(plan::FEXIT_SET.iter().map(|p| AttachReport {
                program: p.variants[0].1.into(),
                hook: format!("fexit/{}", p.function),
                skipped: Some("this kernel refuses BPF trampolines".into()),
            }));
        }
        if opts.mode == ProbeMode::Auto && fexit_attached == 0 {
            tracing::info!("fexit programs refused by this kernel: using syscall tracepoints");
        }
        Ok(Self {
            ebpf,
            mode,
            reports,
            attach_time: started.elapsed(),
            phases: [("BTF", btf_done), ("maps", maps_done - btf_done)],
        })
    }

    /// Detaches and unloads every program, many at a time: each detach waits for the kernel's
    /// tracepoint grace period (tens of ms), and waiting for them one by one made stopping
    /// take over a second (and many under emulation).
    fn detach_all(&mut self) {
        let mut progs: Vec<(&str, &mut aya::programs::Program)> =
            self.ebpf.programs_mut().collect();
        let per_thread = progs.len().div_ceil(DETACH_THREADS).max(1);
        std::thread::scope(|s| {
            for chunk in progs.chunks_mut(per_thread) {
                s.spawn(move || {
                    for (name, prog) in chunk.iter_mut() {
                        if let Err(e) = unload(prog) {
                            tracing::debug!(program = %name, error = %e, "unload");
                        }
                    }
                });
            }
        });
    }

    /// Takes the maps the reader and stats stages need (once).
    pub fn take_maps(&mut self) -> Result<ProbeMaps, ProbeError> {
        fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
            ebpf: &mut Ebpf,
            name: &'static str,
        ) -> Result<T, ProbeError> {
            let map = ebpf
                .take_map(name)
                .ok_or(ProbeError::Map(name, missing()))?;
            T::try_from(map).map_err(|e| ProbeError::Map(name, e))
        }
        Ok(ProbeMaps {
            events: take(&mut self.ebpf, MAP_EVENTS)?,
            counters: take(&mut self.ebpf, MAP_COUNTERS)?,
            errors: take(&mut self.ebpf, MAP_ERRORS)?,
            deletes_by_proc: take(&mut self.ebpf, MAP_DELETES_BY_PROC)?,
            deletes_by_dir: take(&mut self.ebpf, MAP_DELETES_BY_DIR)?,
            deletes_by_mount: take(&mut self.ebpf, MAP_DELETES_BY_MOUNT)?,
            deletes_pending: take(&mut self.ebpf, MAP_DELETES_PENDING)?,
            proc_names: take(&mut self.ebpf, MAP_PROC_NAMES)?,
            killed: take(&mut self.ebpf, MAP_KILLED)?,
            heartbeat_files: take(&mut self.ebpf, MAP_HEARTBEAT_FILES)?,
            config: take(&mut self.ebpf, MAP_CONFIG)?,
        })
    }

    /// One human line: mode, what attached, what was skipped, how long it took.
    pub fn summary(&self) -> String {
        let attached: Vec<_> = self
            .reports
            .iter()
            .filter(|r| r.skipped.is_none())
            .map(|r| r.hook.as_str())
            .collect();
        let skipped: Vec<_> = self
            .reports
            .iter()
            .filter_map(|r| r.skipped.as_ref().map(|why| format!("{} ({why})", r.hook)))
            .collect();
        let before: std::time::Duration = self.phases.iter().map(|p| p.1).sum();
        let mut line = format!(
            "fsobserver: probe mode {}: attached {}/{} programs in {} ms ({}, programs {} ms): {}",
            self.mode,
            attached.len(),
            self.reports.len(),
            self.attach_time.as_millis(),
            self.phases
                .iter()
                .map(|(what, d)| format!("{what} {} ms", d.as_millis()))
                .collect::<Vec<_>>()
                .join(", "),
            self.attach_time.saturating_sub(before).as_millis(),
            attached.join(", ")
        );
        if !skipped.is_empty() {
            line.push_str(&format!("; skipped: {}", skipped.join(", ")));
        }
        line
    }
}

/// Inserts every key of a filter set (value 1).
fn fill_set<K: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    keys: &[K],
) -> Result<(), ProbeError> {
    let map = ebpf.map_mut(name).ok_or(ProbeError::Map(name, missing()))?;
    let mut set: aya::maps::HashMap<_, K, u8> =
        aya::maps::HashMap::try_from(map).map_err(|e| ProbeError::Map(name, e))?;
    for k in keys {
        set.insert(k, 1, 0).map_err(|e| ProbeError::Map(name, e))?;
    }
    Ok(())
}

fn missing() -> aya::maps::MapError {
    aya::maps::MapError::InvalidName {
        name: "not in object".into(),
    }
}

/// Where `res` (and `req`, when present) sit in this kernel's io_uring completion record;
/// left zero (the program is then skipped) when the kernel has no such tracepoint or the
/// record's shape is unknown.
fn io_uring_layout(
    tracefs: &std::path::Path,
    offsets: &mut observer_common::offsets::KernelOffsets,
) -> Result<(), ProbeError> {
    let (cat, name) = plan::IO_URING_COMPLETE;
    if !tracefs::exists(tracefs, cat, name) {
        return Ok(());
    }
    let res = tracefs::field_offset(tracefs, cat, name, "res")?;
    let req = tracefs::field_offset(tracefs, cat, name, "req")?;
    if let Some((off, size @ (4 | 8))) = res {
        offsets.iou_tp_res = off as u32;
        offsets.iou_tp_res_size = size as u32;
    }
    // The request is used only when the kernel's BTF also describes `struct io_kiocb`.
    if let Some((off, 8)) = req
        && offsets.iou_req_opcode != 0
    {
        offsets.iou_tp_req = off as u32;
    }
    Ok(())
}
