//! The two lower bounds of the workload table (issue #19's dispatcher question), loaded from the
//! observer's own eBPF object, where they are kept for the bench and never loaded by the daemon:
//! - **empty programs**: a program that returns at once on each of the observer's `sys_exit_*`
//!   tracepoints (the least any tracepoint-set observer pays on a watched call);
//! - **dispatcher floor**: one raw `sys_exit` program for every syscall that reads the number and
//!   tests it against the watched set (the least a single dispatcher pays, on every call).

use std::path::Path;

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    programs::{RawTracePoint, TracePoint},
};
use observer_common::syscall::{SYS_EXIT_FIRST, SYS_EXIT_LAST, name};

/// Which lower bound.
#[derive(Clone, Copy)]
pub enum Kind {
    Empty,
    Dispatch,
}

/// Loaded and attached while held; detached and unloaded on drop.
pub struct Prototype {
    _ebpf: Ebpf,
}

impl Prototype {
    pub fn start(object: &Path, kind: Kind) -> anyhow::Result<Prototype> {
        let mut ebpf = EbpfLoader::new()
            .load_file(object)
            .with_context(|| format!("cannot load {}", object.display()))?;
        match kind {
            Kind::Empty => {
                let prog: &mut TracePoint = ebpf
                    .program_mut("fso_bench_empty")
                    .context("fso_bench_empty missing from the object")?
                    .try_into()?;
                prog.load()?;
                for id in SYS_EXIT_FIRST..=SYS_EXIT_LAST {
                    prog.attach("syscalls", &format!("sys_exit_{}", name(id)))
                        .with_context(|| format!("attaching to sys_exit_{}", name(id)))?;
                }
            }
            Kind::Dispatch => {
                let prog: &mut RawTracePoint = ebpf
                    .program_mut("fso_bench_dispatch")
                    .context("fso_bench_dispatch missing from the object")?
                    .try_into()?;
                prog.load()?;
                prog.attach("sys_exit")?;
            }
        }
        Ok(Prototype { _ebpf: ebpf })
    }
}
