//! Architecture-independent syscall ids carried in events (the kernel's numbers differ per arch).

pub const SYS_UNKNOWN: u32 = 0;
pub const SYS_WRITE: u32 = 1;
pub const SYS_PWRITE64: u32 = 2;
pub const SYS_WRITEV: u32 = 3;
pub const SYS_PWRITEV: u32 = 4;
pub const SYS_PWRITEV2: u32 = 5;
pub const SYS_OPEN: u32 = 6;
pub const SYS_OPENAT: u32 = 7;
pub const SYS_OPENAT2: u32 = 8;
pub const SYS_CREAT: u32 = 9;

/// Number of ids (one past the largest).
pub const SYS_COUNT: u32 = 10;

/// Names indexed by id; the same strings name the `sys_exit_<name>` tracepoints.
pub const SYSCALL_NAMES: [&str; SYS_COUNT as usize] = [
    "unknown", "write", "pwrite64", "writev", "pwritev", "pwritev2", "open", "openat", "openat2",
    "creat",
];

/// Name of a syscall id; `"unknown"` for ids this build does not know.
pub fn name(id: u32) -> &'static str {
    SYSCALL_NAMES.get(id as usize).copied().unwrap_or("unknown")
}

/// Whether the syscall takes an fd of the file written (write family).
pub const fn is_write_family(id: u32) -> bool {
    id >= SYS_WRITE && id <= SYS_PWRITEV2
}

/// Whether the syscall takes a pathname that may be created (open family).
pub const fn is_open_family(id: u32) -> bool {
    id >= SYS_OPEN && id <= SYS_CREAT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_ids() {
        assert_eq!(name(SYS_WRITE), "write");
        assert_eq!(name(SYS_PWRITEV2), "pwritev2");
        assert_eq!(name(SYS_OPENAT2), "openat2");
        assert_eq!(name(SYS_CREAT), "creat");
        assert_eq!(name(SYS_COUNT), "unknown");
        assert_eq!(name(u32::MAX), "unknown");
        assert!(is_write_family(SYS_WRITEV) && !is_write_family(SYS_OPEN));
        assert!(is_open_family(SYS_OPENAT) && !is_open_family(SYS_PWRITE64));
    }
}
