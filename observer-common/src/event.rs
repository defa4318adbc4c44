//! Ring-buffer records. Every record starts with [`EventHeader`]; `size` is the whole record
//! (header, body and trailing variable-length path bytes).

/// A failed (or, later, observed) filesystem syscall; body is [`SyscallEvent`].
pub const EVENT_SYSCALL: u32 = 1;

/// Length of `comm` (the kernel's `TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Fixed header of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// One of the `EVENT_*` ids.
    pub kind: u32,
    /// Size in bytes of the whole record, header included.
    pub size: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the syscall returned.
    pub ktime_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// cgroup v2 id of the task (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    /// Task command name, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// Inode number of the task's mount namespace (`/proc/PID/ns/mnt`), which names the view its
    /// path is in; 0 when it could not be read.
    pub mnt_ns: u32,
    pub _pad: u32,
}

/// Describes the path bytes that follow a [`SyscallEvent`].
///
/// Layout of the bytes: `ncomp` NUL-terminated components in walk order (leaf first, i.e.
/// reversed), starting at offset 0; then, if [`PATH_HAS_TAIL`] is set, a NUL-terminated string as
/// the process passed it (for `open`-family calls) starting at `tail_off`. The absolute path is
/// `"/" + reverse(components).join("/")`, followed by `"/" + tail` when a tail is present (or the
/// tail alone when it is absolute).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PathInfo {
    /// Number of path bytes that follow the body.
    pub len: u16,
    /// Number of components walked (leaf first).
    pub ncomp: u16,
    /// `PATH_*` flags.
    pub flags: u16,
    /// Offset of the tail string within the path bytes (valid with [`PATH_HAS_TAIL`]).
    pub tail_off: u16,
}

/// Components come from walking a `struct path` (fd, dirfd or cwd) up to the root mount.
pub const PATH_WALKED: u16 = 1 << 0;
/// The walk stopped before the root (depth or buffer limit): the path is a suffix.
pub const PATH_TRUNCATED: u16 = 1 << 1;
/// A tail string (the pathname argument) follows the components.
pub const PATH_HAS_TAIL: u16 = 1 << 2;
/// The walk base was the task's cwd (`AT_FDCWD`).
pub const PATH_BASE_CWD: u16 = 1 << 3;
/// The walk base was a directory fd.
pub const PATH_BASE_DIRFD: u16 = 1 << 4;
/// Some kernel or user memory could not be read; whatever is present is best effort.
pub const PATH_INCOMPLETE: u16 = 1 << 5;
/// The walk reached the root of the task's mount namespace.
pub const PATH_REACHED_ROOT: u16 = 1 << 6;
/// The walk had no mount (fexit on a VFS function that takes only a dentry): the components are
/// relative to the root of the filesystem `dev`; userspace prefixes its mount point.
pub const PATH_FS_RELATIVE: u16 = 1 << 7;

/// Size of the component area; a component is written only when it fits entirely.
pub const PATH_COMPONENT_AREA: usize = 4096;
/// Longest single component read (`NAME_MAX` + NUL).
pub const PATH_NAME_MAX: usize = 256;
/// Longest tail read (`PATH_MAX`).
pub const PATH_TAIL_MAX: usize = 4096;
/// Room for path bytes after the body (component area + tail).
pub const PATH_BUF_SIZE: usize = PATH_COMPONENT_AREA + PATH_TAIL_MAX;
/// Most components walked (mount crossings included).
pub const PATH_MAX_DEPTH: u32 = 40;

/// Body of [`EVENT_SYSCALL`]; path bytes follow at `size_of::<SyscallEvent>()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallEvent {
    pub header: EventHeader,
    /// One of the [`crate::syscall`] ids (architecture independent).
    pub syscall: u32,
    /// Positive errno for failures, 0 for successes.
    pub errno: u32,
    /// Raw return value.
    pub ret: i64,
    /// The fd (write family) or dirfd (`*at` family; `AT_FDCWD` = -100); -1 when not applicable.
    pub fd: i32,
    /// `open` flags (`O_*`) for the open family, 0 otherwise.
    pub flags: u32,
    /// Requested byte count (write family; vectored writes: sum of the first iovecs).
    pub count: u64,
    /// Inode number of the file (fd-based calls) or of the base directory; 0 when unknown.
    pub ino: u64,
    /// `s_dev` of the filesystem (kernel encoding: major << 20 | minor); 0 when unknown.
    pub dev: u32,
    /// Syscall-specific flags (`unlinkat`/`linkat`/`utimensat` flags, `renameat2` flags).
    pub aux: u32,
    /// Architecture syscall number of the call in progress; -1 when none (kernel thread).
    pub nr: i32,
    /// `HOOK_*`: which kind of program produced the record.
    pub hook: u32,
    pub path: PathInfo,
}

/// `aux` bit of a write-family record: the file written is a configured heartbeat (lock) file.
pub const AUX_HEARTBEAT_WRITE: u32 = 1 << 31;

/// Record produced by a `syscalls/sys_exit_*` tracepoint program.
pub const HOOK_TRACEPOINT: u32 = 1;
/// Record produced by an fexit program on a VFS function.
pub const HOOK_FEXIT: u32 = 2;

/// Record produced by the `io_uring/io_uring_complete` tracepoint (a failed completion; `aux`
/// holds the `IORING_OP_*` opcode, or [`AUX_IO_URING_OP_UNKNOWN`] on kernels whose record does
/// not name the request).
pub const HOOK_IO_URING: u32 = 3;
pub const AUX_IO_URING_OP_UNKNOWN: u32 = u32::MAX;

/// Record naming a directory the entry counters key for the first time (`FEATURE_GROWTH`):
/// `dev`/`ino` are the key, the path is the directory's, the identity is the process whose
/// create or deletion there came first. Not an event: it feeds the growth table's names.
pub const HOOK_DIR_NAME: u32 = 4;

/// Offset of the path bytes within an [`EVENT_SYSCALL`] record.
pub const SYSCALL_EVENT_PATH_OFFSET: usize = size_of::<SyscallEvent>();

/// Per-CPU scratch where the kernel side builds a record before `bpf_ringbuf_output`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SyscallEventBuf {
    pub event: SyscallEvent,
    pub path: [u8; PATH_BUF_SIZE],
}

const _: () = {
    assert!(size_of::<EventHeader>() == 64);
    assert!(size_of::<PathInfo>() == 8);
    assert!(size_of::<SyscallEvent>() == 128);
    assert!(align_of::<SyscallEvent>() == 8);
    assert!(size_of::<SyscallEventBuf>() == 128 + PATH_BUF_SIZE);
};

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn header_layout_is_stable() {
        assert_eq!(offset_of!(EventHeader, kind), 0);
        assert_eq!(offset_of!(EventHeader, size), 4);
        assert_eq!(offset_of!(EventHeader, ktime_ns), 8);
        assert_eq!(offset_of!(EventHeader, tgid), 16);
        assert_eq!(offset_of!(EventHeader, tid), 20);
        assert_eq!(offset_of!(EventHeader, uid), 24);
        assert_eq!(offset_of!(EventHeader, gid), 28);
        assert_eq!(offset_of!(EventHeader, cgroup_id), 32);
        assert_eq!(offset_of!(EventHeader, comm), 40);
        assert_eq!(offset_of!(EventHeader, mnt_ns), 56);
        assert_eq!(size_of::<EventHeader>(), 64);
    }

    #[test]
    fn syscall_event_layout_is_stable() {
        assert_eq!(offset_of!(SyscallEvent, header), 0);
        assert_eq!(offset_of!(SyscallEvent, syscall), 64);
        assert_eq!(offset_of!(SyscallEvent, errno), 68);
        assert_eq!(offset_of!(SyscallEvent, ret), 72);
        assert_eq!(offset_of!(SyscallEvent, fd), 80);
        assert_eq!(offset_of!(SyscallEvent, flags), 84);
        assert_eq!(offset_of!(SyscallEvent, count), 88);
        assert_eq!(offset_of!(SyscallEvent, ino), 96);
        assert_eq!(offset_of!(SyscallEvent, dev), 104);
        assert_eq!(offset_of!(SyscallEvent, aux), 108);
        assert_eq!(offset_of!(SyscallEvent, nr), 112);
        assert_eq!(offset_of!(SyscallEvent, hook), 116);
        assert_eq!(offset_of!(SyscallEvent, path), 120);
        assert_eq!(SYSCALL_EVENT_PATH_OFFSET, 128);
        assert_eq!(offset_of!(SyscallEventBuf, path), SYSCALL_EVENT_PATH_OFFSET);
    }

    #[test]
    fn path_areas_fit_the_masks_the_kernel_uses() {
        // The kernel writes a component at `off & (AREA-1)` reading up to NAME_MAX bytes, and the
        // tail at `off & (AREA-1)` reading up to TAIL_MAX bytes: both must stay inside the buffer.
        const { assert!(PATH_COMPONENT_AREA.is_power_of_two()) };
        const { assert!(PATH_COMPONENT_AREA - 1 + PATH_TAIL_MAX <= PATH_BUF_SIZE) };
        const { assert!(PATH_BUF_SIZE <= u16::MAX as usize) };
    }
}
