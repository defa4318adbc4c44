//! The declarative attach plan: each program, the hook it needs, and what happens when the
//! kernel lacks that hook.

use observer_common::syscall::{self, SYS_EXIT_FIRST, SYS_EXIT_LAST};

/// How a program attaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `syscalls/sys_exit_<name>` tracepoint.
    SysExit(&'static str),
    /// Another tracepoint, `(category, name)`.
    Tracepoint(&'static str, &'static str),
}

/// Failed io_uring completions (the request never passes through a write/open syscall).
pub const IO_URING_COMPLETE: (&str, &str) = ("io_uring", "io_uring_complete");

#[derive(Clone, Debug)]
pub struct PlannedProgram {
    /// Program (function) name in the object.
    pub program: String,
    pub hook: Hook,
    /// When true a missing hook is an error; otherwise the program is skipped and the skip is
    /// reported (legacy calls such as `open`/`creat`/`rename` do not exist on arm64).
    pub required: bool,
}

/// Calls every supported kernel and architecture has; the rest are optional.
const REQUIRED: &[u32] = &[
    syscall::SYS_WRITE,
    syscall::SYS_PWRITE64,
    syscall::SYS_WRITEV,
    syscall::SYS_OPENAT,
    syscall::SYS_UNLINKAT,
    syscall::SYS_RENAMEAT,
    syscall::SYS_UTIMENSAT,
];

/// The tracepoint set (portable; works where fentry/fexit are refused): one program per
/// `sys_exit` tracepoint, then io_uring completions (optional: io_uring may be compiled out).
pub fn tracepoint_set() -> Vec<PlannedProgram> {
    let mut set: Vec<PlannedProgram> = (SYS_EXIT_FIRST..=SYS_EXIT_LAST)
        .map(|id| {
            let name = syscall::name(id);
            PlannedProgram {
                program: format!("fso_{name}"),
                hook: Hook::SysExit(name),
                required: REQUIRED.contains(&id),
            }
        })
        .collect();
    set.push(PlannedProgram {
        program: "fso_io_uring_complete".into(),
        hook: Hook::Tracepoint(IO_URING_COMPLETE.0, IO_URING_COMPLETE.1),
        required: false,
    });
    set
}

/// One fexit program: the kernel function and the program variant per parameter count.
#[derive(Clone, Copy, Debug)]
pub struct FexitPlan {
    pub function: &'static str,
    /// `(parameter count, program)`; `None` count: any.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_every_exit_program() {
        let plan = tracepoint_set();
        assert_eq!(plan.len() as u32, SYS_EXIT_LAST - SYS_EXIT_FIRST + 2);
        for p in &plan {
            let Hook::SysExit(name) = p.hook.clone() else {
                assert_eq!(p.program, "fso_io_uring_complete");
                assert!(!p.required);
                continue;
            };
            assert_eq!(p.program, format!("fso_{name}"));
            assert!((SYS_EXIT_FIRST..=SYS_EXIT_LAST).any(|id| syscall::name(id) == name));
        }
        assert!(
            plan.iter()
                .any(|p| p.program == "fso_unlinkat" && p.required)
        );
    }
}
