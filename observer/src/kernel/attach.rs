//! Attaching the plan: fexit programs one by one (a refusal is a skip with its reason), and the
//! tracepoint set checked against tracefs, then loaded in parallel — the verifier runs once per
//! program, which is most of a start-up (seconds under software emulation) — then attached.

use aya::{
    Ebpf,
    programs::{Program, ProgramError, TracePoint},
};
use observer_common::{
    names::{MAP_TAIL, PROG_NAME_DIR, SYS_EXIT_RET_OFFSET},
    offsets::KernelOffsets,
};

use super::{
    AttachReport, ProbeError,
    plan::{self, Hook},
    tracefs,
};

/// Whether this kernel accepts an fexit program on `vfs_write` at all: a two-instruction
/// tracing program loaded with a raw `bpf(2)` call and closed again (kernels that refuse BPF
/// trampolines, e.g. under lockdown, refuse the load with EPERM). Not attached: detaching a
/// trampoline waits for an RCU-tasks grace period. A kernel that loads but refuses to attach
/// is still handled: the fexit attach then fails and is reported as skipped.
pub fn trampolines_allowed(btf: &btf_rs::Btf) -> bool {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_TRACING: u32 = 26;
    const BPF_TRACE_FEXIT: u32 = 25;
    let Some(id) = btf.resolve_ids_by_name("vfs_write").ok().and_then(|ids| {
        ids.into_iter()
            .find(|id| matches!(btf.resolve_type_by_id(*id), Ok(btf_rs::Type::Func(_))))
    }) else {
        return false;
    };
    // r0 = 0; exit
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_TRACING.to_ne_bytes());
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[68..72].copy_from_slice(&BPF_TRACE_FEXIT.to_ne_bytes());
    attr[108..112].copy_from_slice(&id.to_ne_bytes());
    // SAFETY: bpf(2) with a zero-padded attribute buffer of the size passed.
    let prog = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if prog < 0 {
        return false;
    }
    // SAFETY: a new fd from the kernel; dropping it unloads the program.
    drop(unsafe { OwnedFd::from_raw_fd(prog as i32) });
    true
}

/// Loads and attaches the tracepoint set: every program whose hook exists (a missing required
/// hook, or a record layout the programs were not built for, is an error).
pub fn tracepoints(
    ebpf: &mut Ebpf,
    tracefs: &std::path::Path,
    offsets: &KernelOffsets,
    growth: bool,
) -> Result<Vec<AttachReport>, ProbeError> {
    let mut reports = Vec::new();
    let mut wanted = Vec::new();
    for planned in plan::tracepoint_set() {
        let (category, name) = match planned.hook {
            Hook::SysExit(sys) => ("syscalls", format!("sys_exit_{sys}")),
            Hook::Tracepoint(category, name) => (category, name.to_string()),
        };
        let hook = format!("{category}/{name}");
        let program = planned.program.clone();
        let skip = |why: &str| AttachReport {
            program: program.clone(),
            hook: hook.clone(),
            skipped: Some(why.into()),
        };
        if !tracefs::exists(tracefs, category, &name) {
            if planned.required {
                return Err(ProbeError::MissingHook { program, hook });
            }
            reports.push(skip("no such tracepoint"));
            continue;
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
            reports.push(skip("unknown record layout (no 4- or 8-byte `res` field)"));
            continue;
        }
        wanted.push((program, category, name, hook));
    }
    let mut names: Vec<&str> = wanted.iter().map(|w| w.0.as_str()).collect();
    if growth {
        names.push(PROG_NAME_DIR);
    }
    load_parallel(ebpf, &names)?;
    if growth {
        install_naming(ebpf)?;
    }
    for (program, category, name, hook) in wanted {
        let err = |source| ProbeError::Program {
            program: program.clone(),
            source,
        };
        let prog: &mut TracePoint = ebpf
            .program_mut(&program)
            .ok_or_else(|| err(ProgramError::NotLoaded))?
            .try_into()
            .map_err(err)?;
        prog.attach(category, &name).map_err(err)?;
        reports.push(AttachReport {
            program,
            hook,
            skipped: None,
        });
    }
    Ok(reports)
}

/// Puts the loaded naming program in slot 0 of `MAP_TAIL`: the counting programs tail-call it
/// (never attached; verified once, not inside each of them).
fn install_naming(ebpf: &mut Ebpf) -> Result<(), ProbeError> {
    let err = |source| ProbeError::Program {
        program: PROG_NAME_DIR.into(),
        source,
    };
    let prog: &mut TracePoint = ebpf
        .program_mut(PROG_NAME_DIR)
        .ok_or_else(|| err(ProgramError::NotLoaded))?
        .try_into()
        .map_err(err)?;
    let fd = prog
        .fd()
        .map_err(err)?
        .try_clone()
        .map_err(|e| err(e.into()))?;
    let map = ebpf
        .map_mut(MAP_TAIL)
        .ok_or_else(|| ProbeError::Map(MAP_TAIL, super::missing()))?;
    let mut tail =
        aya::maps::ProgramArray::try_from(map).map_err(|e| ProbeError::Map(MAP_TAIL, e))?;
    tail.set(0, &fd, 0)
        .map_err(|e| ProbeError::Map(MAP_TAIL, e))
}

/// Loads the tracepoint programs `names` into the kernel, spread over the CPUs.
fn load_parallel(ebpf: &mut Ebpf, names: &[&str]) -> Result<(), ProbeError> {
    let mut progs: Vec<(&str, &mut Program)> = ebpf
        .programs_mut()
        .filter(|(n, _)| names.contains(n))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let per_thread = progs.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = progs
            .chunks_mut(per_thread)
            .map(|chunk| {
                s.spawn(move || -> Result<(), ProbeError> {
                    for (name, prog) in chunk.iter_mut() {
                        let err = |source| ProbeError::Program {
                            program: name.to_string(),
                            source,
                        };
                        let tp: &mut TracePoint = (&mut **prog).try_into().map_err(err)?;
                        tp.load().map_err(err)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().unwrap_or(Err(ProbeError::LoadPanicked)))
    })
}

/// Loads and attaches one fexit program; a refusal is reported as skipped (with the reason).
pub fn fexit(
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
    let result = (|| -> Result<(), ProgramError> {
        let prog: &mut aya::programs::FExit = ebpf
            .program_mut(program)
            .ok_or(ProgramError::NotLoaded)?
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
