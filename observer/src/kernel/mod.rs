//! Stage 1 — probes: load the embedded object into the kernel with offsets from BTF, write the
//! runtime filter, attach the plan and report what attached.

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
    programs::TracePoint,
};
use observer_common::config::{DeleteCounts, DirKey, ErrorKey, RuntimeConfig};

use self::plan::{Hook, PlannedProgram};
use crate::config::ProbeMode;

use observer_common::names::{
    GLOBAL_FEATURES, GLOBAL_OFFSETS, MAP_CONFIG, MAP_COUNTERS, MAP_DELETES_BY_DIR,
    MAP_DELETES_BY_MOUNT, MAP_DELETES_BY_PROC, MAP_DELETES_PENDING, MAP_ERRORS, MAP_EVENTS,
    MAP_EXCLUDE_CGROUPS, MAP_EXCLUDE_COMMS, MAP_HEARTBEAT_FILES, MAP_NR_TO_ID, MAP_WATCH_DEVS,
    SYS_EXIT_RET_OFFSET,
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
}

/// Handles the rest of the pipeline reads.
pub struct ProbeMaps {
    pub events: RingBuf<MapData>,
    pub counters: PerCpuArray<MapData, u64>,
    pub errors: PerCpuHashMap<MapData, ErrorKey, u64>,
    pub deletes_by_proc: PerCpuHashMap<MapData, u32, DeleteCounts>,
    pub deletes_by_dir: PerCpuHashMap<MapData, DirKey, DeleteCounts>,
    pub deletes_by_mount: PerCpuHashMap<MapData, u32, DeleteCounts>,
    pub deletes_pending: PerCpuArray<MapData, observer_common::config::DeletePending>,
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
        drop(kernel_btf);
        let aya_btf = aya::Btf::parse_file(&opts.btf_path, aya::Endianness::default())
            .map_err(|e| ProbeError::Btf(btf::BtfError::Btf(e.to_string())))?;

        let mut ebpf = EbpfLoader::new()
            .btf(Some(&aya_btf))
            .override_global(GLOBAL_OFFSETS, &offsets, true)
            .override_global(GLOBAL_FEATURES, &opts.features, true)
            .map_max_entries(MAP_EVENTS, opts.ring_buffer_bytes)
            .load(object)?;

        let mut config: Array<_, RuntimeConfig> = Array::try_from(
            ebpf.map_mut(MAP_CONFIG)
                .ok_or(ProbeError::Map(MAP_CONFIG, missing()))?,
        )
        .map_err(|e| ProbeError::Map(MAP_CONFIG, e))?;
        config
            .set(0, opts.runtime, 0)
            .map_err(|e| ProbeError::Map(MAP_CONFIG, e))?;
        fill_set(&mut ebpf, MAP_WATCH_DEVS, &opts.filters.devs)?;
        fill_set(&mut ebpf, MAP_EXCLUDE_COMMS, &opts.filters.comms)?;
        fill_set(&mut ebpf, MAP_EXCLUDE_CGROUPS, &opts.filters.cgroups)?;

        let mut reports = Vec::new();
        let mut fexit_attached = 0;
        if opts.mode != ProbeMode::Tracepoint {
            for (planned, params) in plan::FEXIT_SET.iter().zip(&fexit_params) {
                let report = attach_fexit(&mut ebpf, *params, &aya_btf, planned);
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
            let mut runtime = opts.runtime;
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
        for planned in plan::tracepoint_set() {
            reports.push(attach_tracepoint(&mut ebpf, &tracefs, &offsets, &planned)?);
        }
        let mode = match fexit_attached {
            0 => "tracepoint",
            n if n == plan::FEXIT_SET.len() => "fexit",
            _ => "mixed",
        };
        if opts.mode == ProbeMode::Auto && fexit_attached == 0 {
            tracing::info!("fexit programs refused by this kernel: using syscall tracepoints");
        }
        Ok(Self {
            ebpf,
            mode,
            reports,
            attach_time: started.elapsed(),
        })
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
        let mut line = format!(
            "fsobserver: probe mode {}: attached {}/{} programs in {} ms: {}",
            self.mode,
            attached.len(),
            self.reports.len(),
            self.attach_time.as_millis(),
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

/// Loads and attaches one fexit program; a refusal is reported as skipped (with the reason).
fn attach_fexit(
    ebpf: &mut Ebpf,
    params: Option<usize>,
    aya_btf: &aya::Btf,
    planned: &plan::FexitPlan,
) -> AttachReport {
    let hook = format!("fexit/{}", planned.function);
    let Some(program) = planned.program_for(params) else {
        return AttachReport {
            program: planned.variants[0].1.into(),
            hook,
            skipped: Some(format!(
                "no program for its prototype ({params:?} parameters)"
            )),
        };
    };
    let result = (|| -> Result<(), aya::programs::ProgramError> {
        let prog: &mut aya::programs::FExit = ebpf
            .program_mut(program)
            .ok_or(aya::programs::ProgramError::NotLoaded)?
            .try_into()?;
        prog.load(planned.function, aya_btf)?;
        prog.attach()?;
        Ok(())
    })();
    AttachReport {
        program: program.into(),
        hook,
        skipped: result.err().map(|e| {
            let mut msg = e.to_string();
            if let Some(src) = std::error::Error::source(&e) {
                msg = format!("{msg}: {src}");
            }
            msg.lines().next().unwrap_or_default().to_string()
        }),
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

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    tracefs: &std::path::Path,
    offsets: &observer_common::offsets::KernelOffsets,
    planned: &PlannedProgram,
) -> Result<AttachReport, ProbeError> {
    let (category, name) = match planned.hook {
        Hook::SysExit(sys) => ("syscalls", format!("sys_exit_{sys}")),
        Hook::Tracepoint(category, name) => (category, name.to_string()),
    };
    let hook = format!("{category}/{name}");
    let program = planned.program.clone();
    if !tracefs::exists(tracefs, category, &name) {
        if planned.required {
            return Err(ProbeError::MissingHook { program, hook });
        }
        return Ok(AttachReport {
            program,
            hook,
            skipped: Some("no such tracepoint".into()),
        });
    }
    if let Hook::SysExit(_) = planned.hook {
        let found = tracefs::field_offset(tracefs, category, &name, "ret")?;
        if found != Some((SYS_EXIT_RET_OFFSET, 8)) {
            return Err(ProbeError::Format {
                program,
                hook,
                found,
            });
        }
    } else if offsets.iou_tp_res_size == 0 {
        return Ok(AttachReport {
            program,
            hook,
            skipped: Some("unknown record layout (no 4- or 8-byte `res` field)".into()),
        });
    }
    let err = |source| ProbeError::Program {
        program: program.clone(),
        source,
    };
    let prog: &mut TracePoint = ebpf
        .program_mut(&program)
        .ok_or_else(|| err(aya::programs::ProgramError::NotLoaded))?
        .try_into()
        .map_err(err)?;
    prog.load().map_err(err)?;
    prog.attach(category, &name).map_err(err)?;
    Ok(AttachReport {
        program,
        hook,
        skipped: None,
    })
}
