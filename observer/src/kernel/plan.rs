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
pub use observer_common::names::TRACEPOINT_IO_URING as IO_URING_COMPLETE;

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
                program: format!("{}{name}", observer_common::names::PROGRAM_PREFIX),
                hook: Hook::SysExit(name),
                required: REQUIRED.contains(&id),
            }
        })
        .collect();
    set.push(PlannedProgram {
        program: observer_common::names::PROGRAM_IO_URING.into(),
        hook: Hook::Tracepoint(IO_URING_COMPLETE.0, IO_URING_COMPLETE.1),
        required: false,
    });
    let (category, name) = observer_common::names::TRACEPOINT_PROCESS_EXIT;
    set.push(PlannedProgram {
        program: observer_common::names::PROGRAM_PROCESS_EXIT.into(),
        hook: Hook::Tracepoint(category, name),
        required: true,
    });
    set
}

pub use observer_common::names::{FEXIT_SET, FexitPlan};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_every_exit_program() {
        let plan = tracepoint_set();
        assert_eq!(plan.len() as u32, SYS_EXIT_LAST - SYS_EXIT_FIRST + 3);
        for p in &plan {
            let Hook::SysExit(name) = p.hook.clone() else {
                assert!(
                    (p.program == "fso_io_uring_complete" && !p.required)
                        || (p.program == "fso_process_exit" && p.required),
                    "{p:?}"
                );
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
