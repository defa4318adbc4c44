//! Names shared by the kernel object and the daemon: its maps, its read-only globals, the
//! fexit programs and the functions they attach to, and tracefs ABI facts. The kernel crate
//! declares each map and global under exactly these names (its statics' identifiers); the
//! daemon finds them by these constants, and its unit tests check the embedded object has every
//! one of them.

/// Ring buffer of detail records.
pub const MAP_EVENTS: &str = "OBSERVER_EVENTS";
/// Per-CPU scratch record.
pub const MAP_SCRATCH: &str = "OBSERVER_SCRATCH";
/// Per-CPU counter slots (`COUNTER_*`).
pub const MAP_COUNTERS: &str = "OBSERVER_COUNTERS";
/// Exact failure counts per (syscall, errno, filesystem).
pub const MAP_ERRORS: &str = "OBSERVER_ERRORS";
pub const MAP_DELETES_BY_PROC: &str = "OBSERVER_DELETES_BY_PROC";
pub const MAP_DELETES_BY_DIR: &str = "OBSERVER_DELETES_BY_DIR";
pub const MAP_DELETES_BY_MOUNT: &str = "OBSERVER_DELETES_BY_MOUNT";
pub const MAP_DELETES_PENDING: &str = "OBSERVER_DELETES_PENDING";
/// Who each process of the entry counters is (`ProcName`), kept from its first count.
pub const MAP_PROC_NAMES: &str = "OBSERVER_PROC_NAMES";
/// Counted processes killed by a signal: tgid -> signal number.
pub const MAP_KILLED: &str = "OBSERVER_KILLED";
/// x86-64 syscall number -> syscall id (fexit programs).
pub const MAP_NR_TO_ID: &str = "OBSERVER_NR_TO_ID";
/// Thread -> syscall id an fexit program already reported.
pub const MAP_SEEN: &str = "OBSERVER_SEEN";
pub const MAP_HEARTBEAT_FILES: &str = "OBSERVER_HEARTBEAT_FILES";
/// Slot 0: the runtime configuration.
pub const MAP_CONFIG: &str = "OBSERVER_CONFIG";
pub const MAP_WATCH_DEVS: &str = "OBSERVER_WATCH_DEVS";
pub const MAP_EXCLUDE_COMMS: &str = "OBSERVER_EXCLUDE_COMMS";
pub const MAP_EXCLUDE_CGROUPS: &str = "OBSERVER_EXCLUDE_CGROUPS";
/// Slot 0: the naming program (`PROG_NAME_DIR`), tail-called by the programs that count growth.
pub const MAP_TAIL: &str = "OBSERVER_TAIL";
/// The program that names a directory new to the entry counters: loaded with growth and put in
/// `MAP_TAIL`, never attached.
pub const PROG_NAME_DIR: &str = "fso_name_dir";

/// Every map the daemon opens by name.
pub const MAPS: &[&str] = &[
    MAP_EVENTS,
    MAP_SCRATCH,
    MAP_COUNTERS,
    MAP_ERRORS,
    MAP_DELETES_BY_PROC,
    MAP_DELETES_BY_DIR,
    MAP_DELETES_BY_MOUNT,
    MAP_DELETES_PENDING,
    MAP_PROC_NAMES,
    MAP_KILLED,
    MAP_NR_TO_ID,
    MAP_SEEN,
    MAP_HEARTBEAT_FILES,
    MAP_CONFIG,
    MAP_WATCH_DEVS,
    MAP_EXCLUDE_COMMS,
    MAP_EXCLUDE_CGROUPS,
    MAP_TAIL,
];

/// Read-only global: kernel struct offsets (`KernelOffsets`), written before load.
pub const GLOBAL_OFFSETS: &str = "OBSERVER_OFFSETS";
/// Read-only global: load-time feature bits (`FEATURE_*`).
pub const GLOBAL_FEATURES: &str = "OBSERVER_FEATURES";

/// Every program's name starts with this (how tools and tests tell ours apart).
pub const PROGRAM_PREFIX: &str = "fso_";
/// The program on `io_uring/io_uring_complete`.
pub const PROGRAM_IO_URING: &str = "fso_io_uring_complete";
/// `io_uring/io_uring_complete`: failed io_uring completions.
pub const TRACEPOINT_IO_URING: (&str, &str) = ("io_uring", "io_uring_complete");
/// The program on `sched/sched_process_exit`.
pub const PROGRAM_PROCESS_EXIT: &str = "fso_process_exit";
/// `sched/sched_process_exit`: a counted process killed by a signal (`OBSERVER_KILLED`).
pub const TRACEPOINT_PROCESS_EXIT: (&str, &str) = ("sched", "sched_process_exit");

/// Offset of `ret` in every `syscalls/sys_exit_*` record (`struct trace_entry` + `int nr` +
/// padding): tracefs ABI. The daemon checks each tracepoint's `format` file against it before
/// attaching and refuses to attach if a kernel disagrees.
pub const SYS_EXIT_RET_OFFSET: usize = 16;

/// One fexit attachment: the kernel function, and the program for each of its prototypes
/// (`(parameter count, program)`; `None`: any). The kernel crate checks at compile time that
/// each of its fexit programs is listed here under its function.
#[derive(Clone, Copy, Debug)]
pub struct FexitPlan {
    pub function: &'static str,
    pub variants: &'static [(Option<usize>, &'static str)],
}

/// The fexit set (needs BPF trampolines: refused on some kernels, e.g. under lockdown).
pub const FEXIT_SET: &[FexitPlan] = &[
    FexitPlan {
        function: "vfs_write",
        variants: &[(None, "fso_fx_vfs_write")],
    },
    FexitPlan {
        function: "do_sys_openat2",
        variants: &[(None, "fso_fx_do_sys_openat2")],
    },
    FexitPlan {
        function: "vfs_unlink",
        variants: &[
            (Some(3), "fso_fx_vfs_unlink3"),
            (Some(4), "fso_fx_vfs_unlink4"),
        ],
    },
    FexitPlan {
        function: "vfs_rmdir",
        variants: &[
            (Some(2), "fso_fx_vfs_rmdir2"),
            (Some(3), "fso_fx_vfs_rmdir3"),
        ],
    },
    FexitPlan {
        function: "vfs_rename",
        variants: &[
            (Some(1), "fso_fx_vfs_rename1"),
            (Some(6), "fso_fx_vfs_rename6"),
        ],
    },
    FexitPlan {
        function: "vfs_utimes",
        variants: &[(None, "fso_fx_vfs_utimes")],
    },
];

impl FexitPlan {
    /// The program matching a function with `params` parameters.
    pub fn program_for(&self, params: Option<usize>) -> Option<&'static str> {
        self.variants
            .iter()
            .find(|(n, _)| n.is_none() || *n == params)
            .map(|(_, p)| *p)
    }
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether `program` is a variant of `function` in [`FEXIT_SET`] (compile-time check of the
/// kernel crate's fexit table).
pub const fn fexit_planned(program: &str, function: &str) -> bool {
    let mut i = 0;
    while i < FEXIT_SET.len() {
        let plan = &FEXIT_SET[i];
        if str_eq(plan.function, function) {
            let mut j = 0;
            while j < plan.variants.len() {
                if str_eq(plan.variants[j].1, program) {
                    return true;
                }
                j += 1;
            }
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_programs_are_found_under_their_function_only() {
        assert!(fexit_planned("fso_fx_vfs_unlink4", "vfs_unlink"));
        assert!(!fexit_planned("fso_fx_vfs_unlink4", "vfs_rmdir"));
        assert!(!fexit_planned("fso_fx_vfs_unlink", "vfs_unlink"));
        assert_eq!(
            FEXIT_SET[2].program_for(Some(4)),
            Some("fso_fx_vfs_unlink4")
        );
        assert_eq!(FEXIT_SET[2].program_for(Some(5)), None);
        assert_eq!(FEXIT_SET[0].program_for(Some(9)), Some("fso_fx_vfs_write"));
        for plan in FEXIT_SET {
            for (_, p) in plan.variants {
                assert!(p.starts_with(PROGRAM_PREFIX));
            }
        }
        let mut maps = MAPS.to_vec();
        maps.sort();
        maps.dedup();
        assert_eq!(maps.len(), MAPS.len(), "map names are distinct");
    }
}
