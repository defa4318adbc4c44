//! The declarative attach plan: each program, the hook it needs, and what happens when the
//! kernel lacks that hook.

use observer_common::syscall::{self, SYS_EXIT_FIRST, SYS_EXIT_LAST};

/// How a program attaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `syscalls/sys_exit_<name>` tracepoint.
    SysExit(&'static str),
}

#[derive(Clone, Debug)]
pub struct PlannedProgram {
    /// Program (function) name in the object.
    pub program: String,
    pub hook: Hook,
    /// Syscall id the program reports.
    pub syscall: u32,
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

/// The tracepoint set (portable; works where fentry/fexit are refused).
pub fn tracepoint_set() -> Vec<PlannedProgram> {
    (SYS_EXIT_FIRST..=SYS_EXIT_LAST)
        .map(|id| {
            let name = syscall::name(id);
            PlannedProgram {
                program: format!("fso_{name}"),
                hook: Hook::SysExit(name),
                syscall: id,
                required: REQUIRED.contains(&id),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_every_exit_program() {
        let plan = tracepoint_set();
        assert_eq!(plan.len() as u32, SYS_EXIT_LAST - SYS_EXIT_FIRST + 1);
        for p in &plan {
            let Hook::SysExit(name) = p.hook.clone();
            assert_eq!(p.program, format!("fso_{name}"));
            assert_eq!(syscall::name(p.syscall), name);
        }
        assert!(
            plan.iter()
                .any(|p| p.program == "fso_unlinkat" && p.required)
        );
    }
}
