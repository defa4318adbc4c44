//! The declarative attach plan: each program, the hook it needs, and what happens when the
//! kernel lacks that hook.

use observer_common::syscall;

/// How a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `syscalls/sys_exit_<name>` tracepoint.
    SysExit(&'static str),
}

#[derive(Clone, Copy, Debug)]
pub struct PlannedProgram {
    /// Program (function) name in the object.
    pub program: &'static str,
    pub hook: Hook,
    /// Syscall id the program reports.
    #[cfg_attr(not(test), allow(dead_code))]
    pub syscall: u32,
    /// When true a missing hook is an error; otherwise the program is skipped and the skip is
    /// reported (e.g. `open`/`creat` do not exist on arm64).
    pub required: bool,
}

const fn sys_exit(program: &'static str, id: u32, required: bool) -> PlannedProgram {
    PlannedProgram {
        program,
        hook: Hook::SysExit(syscall::SYSCALL_NAMES[id as usize]),
        syscall: id,
        required,
    }
}

/// The tracepoint set (portable; works where fentry/fexit are refused).
pub const TRACEPOINT_SET: &[PlannedProgram] = &[
    sys_exit("fso_write", syscall::SYS_WRITE, true),
    sys_exit("fso_pwrite64", syscall::SYS_PWRITE64, true),
    sys_exit("fso_writev", syscall::SYS_WRITEV, true),
    sys_exit("fso_pwritev", syscall::SYS_PWRITEV, true),
    sys_exit("fso_pwritev2", syscall::SYS_PWRITEV2, false),
    sys_exit("fso_open", syscall::SYS_OPEN, false),
    sys_exit("fso_openat", syscall::SYS_OPENAT, true),
    sys_exit("fso_openat2", syscall::SYS_OPENAT2, false),
    sys_exit("fso_creat", syscall::SYS_CREAT, false),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_names_match_syscalls() {
        for p in TRACEPOINT_SET {
            let Hook::SysExit(name) = p.hook;
            assert_eq!(p.program, format!("fso_{name}"));
            assert_eq!(syscall::name(p.syscall), name);
        }
    }
}
