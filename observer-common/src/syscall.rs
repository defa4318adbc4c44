//! Architecture-independent syscall ids carried in events, and how each syscall's arguments are
//! laid out (x86-64 argument positions; the kernel programs are instantiated from this table).

/// What the kernel programs do with a syscall's return.
pub const CLASS_ERROR: u8 = 0;
/// Deletions: counted (success and failure) in per-process/dir/mount maps; details sampled.
pub const CLASS_DELETE: u8 = 1;
/// Lock heartbeats (utimes family): every call counted; failures always reported, successes
/// when they are refreshes (times set to now, not repeated within 50 ms by the same process).
pub const CLASS_HEARTBEAT: u8 = 2;

/// How `count` is filled.
pub const COUNT_NONE: u8 = 0;
/// `count` = the argument at `count_arg`.
pub const COUNT_ARG: u8 = 1;
/// `count` = sum of the iovec array at arg 1 with length at arg 2.
pub const COUNT_IOV: u8 = 2;

/// Special handling of the path argument.
pub const PATH_PLAIN: u8 = 0;
/// `utimensat`: a NULL pathname (or `""` with `AT_EMPTY_PATH`) means "the fd in the dirfd slot".
pub const PATH_NULL_MEANS_FD: u8 = 1;

/// Argument layout of one syscall (`-1` = absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallSpec {
    pub name: &'static str,
    pub class: u8,
    /// Arg holding the fd whose file is reported (fd-based calls).
    pub fd_arg: i8,
    /// Arg holding the dirfd a relative path is resolved against (absent: `AT_FDCWD`).
    pub dirfd_arg: i8,
    /// Arg holding the user pathname reported.
    pub path_arg: i8,
    pub count: u8,
    pub count_arg: i8,
    /// Arg copied into `aux` (e.g. `unlinkat` flags, `renameat2` flags, `utimensat` flags).
    pub aux_arg: i8,
    pub path_kind: u8,
}

const fn spec(name: &'static str, class: u8) -> SyscallSpec {
    SyscallSpec {
        name,
        class,
        fd_arg: -1,
        dirfd_arg: -1,
        path_arg: -1,
        count: COUNT_NONE,
        count_arg: -1,
        aux_arg: -1,
        path_kind: PATH_PLAIN,
    }
}

const fn fd(name: &'static str, fd_arg: i8) -> SyscallSpec {
    SyscallSpec {
        fd_arg,
        ..spec(name, CLASS_ERROR)
    }
}

const fn fd_count(name: &'static str, fd_arg: i8, count_arg: i8) -> SyscallSpec {
    SyscallSpec {
        count: COUNT_ARG,
        count_arg,
        ..fd(name, fd_arg)
    }
}

const fn at(name: &'static str, class: u8, dirfd_arg: i8, path_arg: i8) -> SyscallSpec {
    SyscallSpec {
        dirfd_arg,
        path_arg,
        ..spec(name, class)
    }
}

const fn path(name: &'static str, class: u8, path_arg: i8) -> SyscallSpec {
    at(name, class, -1, path_arg)
}

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
pub const SYS_FALLOCATE: u32 = 10;
pub const SYS_FTRUNCATE: u32 = 11;
pub const SYS_TRUNCATE: u32 = 12;
pub const SYS_MKDIR: u32 = 13;
pub const SYS_MKDIRAT: u32 = 14;
pub const SYS_MKNOD: u32 = 15;
pub const SYS_MKNODAT: u32 = 16;
pub const SYS_LINK: u32 = 17;
pub const SYS_LINKAT: u32 = 18;
pub const SYS_SYMLINK: u32 = 19;
pub const SYS_SYMLINKAT: u32 = 20;
pub const SYS_FSYNC: u32 = 21;
pub const SYS_FDATASYNC: u32 = 22;
pub const SYS_SYNC_FILE_RANGE: u32 = 23;
pub const SYS_CLOSE: u32 = 24;
pub const SYS_COPY_FILE_RANGE: u32 = 25;
pub const SYS_SENDFILE64: u32 = 26;
pub const SYS_SPLICE: u32 = 27;
pub const SYS_UNLINK: u32 = 28;
pub const SYS_UNLINKAT: u32 = 29;
pub const SYS_RMDIR: u32 = 30;
pub const SYS_RENAME: u32 = 31;
pub const SYS_RENAMEAT: u32 = 32;
pub const SYS_RENAMEAT2: u32 = 33;
pub const SYS_UTIMENSAT: u32 = 34;
pub const SYS_UTIMES: u32 = 35;
pub const SYS_UTIME: u32 = 36;
pub const SYS_FUTIMESAT: u32 = 37;
/// io_uring completion with a negative result (`io_uring/io_uring_complete`).
pub const SYS_IO_URING: u32 = 38;
/// VFS calls seen by fexit outside a known syscall (kernel threads: nfsd, overlayfs, ...).
pub const SYS_VFS_WRITE: u32 = 39;
pub const SYS_VFS_OPEN: u32 = 40;
pub const SYS_VFS_UNLINK: u32 = 41;
pub const SYS_VFS_RMDIR: u32 = 42;
pub const SYS_VFS_RENAME: u32 = 43;
pub const SYS_VFS_UTIMES: u32 = 44;

/// Number of ids (one past the largest).
pub const SYS_COUNT: u32 = 45;

/// Specs indexed by id; `name` also names the `sys_exit_<name>` tracepoint.
pub const SYSCALLS: [SyscallSpec; SYS_COUNT as usize] = [
    spec("unknown", CLASS_ERROR),
    fd_count("write", 0, 2),
    fd_count("pwrite64", 0, 2),
    SyscallSpec {
        count: COUNT_IOV,
        ..fd("writev", 0)
    },
    SyscallSpec {
        count: COUNT_IOV,
        ..fd("pwritev", 0)
    },
    SyscallSpec {
        count: COUNT_IOV,
        ..fd("pwritev2", 0)
    },
    path("open", CLASS_ERROR, 0),
    at("openat", CLASS_ERROR, 0, 1),
    at("openat2", CLASS_ERROR, 0, 1),
    path("creat", CLASS_ERROR, 0),
    fd_count("fallocate", 0, 3),
    fd_count("ftruncate", 0, 1),
    SyscallSpec {
        count: COUNT_ARG,
        count_arg: 1,
        ..path("truncate", CLASS_ERROR, 0)
    },
    path("mkdir", CLASS_ERROR, 0),
    at("mkdirat", CLASS_ERROR, 0, 1),
    path("mknod", CLASS_ERROR, 0),
    at("mknodat", CLASS_ERROR, 0, 1),
    path("link", CLASS_ERROR, 1),
    SyscallSpec {
        aux_arg: 4,
        ..at("linkat", CLASS_ERROR, 2, 3)
    },
    path("symlink", CLASS_ERROR, 1),
    at("symlinkat", CLASS_ERROR, 1, 2),
    fd("fsync", 0),
    fd("fdatasync", 0),
    fd_count("sync_file_range", 0, 2),
    // The fd is already closed at exit: no path, the fd number is reported.
    spec("close", CLASS_ERROR),
    fd_count("copy_file_range", 2, 4),
    fd_count("sendfile64", 0, 3),
    fd_count("splice", 2, 4),
    path("unlink", CLASS_DELETE, 0),
    SyscallSpec {
        aux_arg: 2,
        ..at("unlinkat", CLASS_DELETE, 0, 1)
    },
    path("rmdir", CLASS_DELETE, 0),
    path("rename", CLASS_DELETE, 1),
    at("renameat", CLASS_DELETE, 2, 3),
    SyscallSpec {
        aux_arg: 4,
        ..at("renameat2", CLASS_DELETE, 2, 3)
    },
    SyscallSpec {
        aux_arg: 3,
        path_kind: PATH_NULL_MEANS_FD,
        ..at("utimensat", CLASS_HEARTBEAT, 0, 1)
    },
    path("utimes", CLASS_HEARTBEAT, 0),
    path("utime", CLASS_HEARTBEAT, 0),
    at("futimesat", CLASS_HEARTBEAT, 0, 1),
    spec("io_uring", CLASS_ERROR),
    spec("vfs_write", CLASS_ERROR),
    spec("vfs_open", CLASS_ERROR),
    spec("vfs_unlink", CLASS_DELETE),
    spec("vfs_rmdir", CLASS_DELETE),
    spec("vfs_rename", CLASS_DELETE),
    spec("vfs_utimes", CLASS_HEARTBEAT),
];

/// x86-64 syscall numbers of the ids the fexit programs can be reached from (the fexit
/// programs map the number of the syscall in progress to an id through `OBSERVER_NR_TO_ID`).
pub const X86_64_NRS: &[(u32, u32)] = &[
    (1, SYS_WRITE),
    (18, SYS_PWRITE64),
    (2, SYS_OPEN),
    (257, SYS_OPENAT),
    (437, SYS_OPENAT2),
    (85, SYS_CREAT),
    (87, SYS_UNLINK),
    (263, SYS_UNLINKAT),
    (84, SYS_RMDIR),
    (82, SYS_RENAME),
    (264, SYS_RENAMEAT),
    (316, SYS_RENAMEAT2),
    (280, SYS_UTIMENSAT),
    (235, SYS_UTIMES),
    (132, SYS_UTIME),
    (261, SYS_FUTIMESAT),
];

/// Whether an fexit program covers this syscall (it reaches vfs_write, do_sys_openat2,
/// vfs_unlink/vfs_rmdir, vfs_rename or vfs_utimes).
pub const fn fexit_covers(id: u32) -> bool {
    matches!(
        id,
        SYS_WRITE
            | SYS_PWRITE64
            | SYS_OPEN
            | SYS_OPENAT
            | SYS_OPENAT2
            | SYS_CREAT
            | SYS_UNLINK
            | SYS_UNLINKAT
            | SYS_RMDIR
            | SYS_RENAME
            | SYS_RENAMEAT
            | SYS_RENAMEAT2
            | SYS_UTIMENSAT
            | SYS_UTIMES
            | SYS_UTIME
            | SYS_FUTIMESAT
    )
}

/// Size of the nr -> id table (x86-64 syscall numbers are below this).
pub const NR_TABLE_SIZE: u32 = 512;

/// Ids of the syscalls with a `sys_exit_<name>` tracepoint program.
pub const SYS_EXIT_FIRST: u32 = SYS_WRITE;
pub const SYS_EXIT_LAST: u32 = SYS_FUTIMESAT;

/// Name of a syscall id; `"unknown"` for ids this build does not know.
pub fn name(id: u32) -> &'static str {
    SYSCALLS
        .get(id as usize)
        .map(|s| s.name)
        .unwrap_or("unknown")
}

/// The spec of `id` (the `unknown` spec for ids this build does not know).
pub const fn spec_of(id: u32) -> SyscallSpec {
    if id < SYS_COUNT {
        SYSCALLS[id as usize]
    } else {
        SYSCALLS[0]
    }
}

/// Whether the syscall writes through an fd and reports a byte count (write family).
pub const fn is_write_family(id: u32) -> bool {
    id >= SYS_WRITE && id <= SYS_PWRITEV2
}

/// Whether the syscall opens (and may create) a path (open family).
pub const fn is_open_family(id: u32) -> bool {
    id >= SYS_OPEN && id <= SYS_CREAT
}

/// Whether a successful call may have created a directory entry (open family, mkdir, mknod,
/// link, symlink).
pub const fn is_create_family(id: u32) -> bool {
    is_open_family(id) || (id >= SYS_MKDIR && id <= SYS_SYMLINKAT)
}

/// Whether the syscall removes a directory entry (unlink, rmdir, rename over a target).
pub const fn is_delete(id: u32) -> bool {
    spec_of(id).class == CLASS_DELETE
}

pub const fn is_heartbeat(id: u32) -> bool {
    spec_of(id).class == CLASS_HEARTBEAT
}

/// Name of an `IORING_OP_*` opcode (the uapi numbering, stable since 5.1); `None` for opcodes
/// this build does not name.
pub fn io_uring_op_name(op: u32) -> Option<&'static str> {
    const NAMES: [&str; 56] = [
        "nop",
        "readv",
        "writev",
        "fsync",
        "read_fixed",
        "write_fixed",
        "poll_add",
        "poll_remove",
        "sync_file_range",
        "sendmsg",
        "recvmsg",
        "timeout",
        "timeout_remove",
        "accept",
        "async_cancel",
        "link_timeout",
        "connect",
        "fallocate",
        "openat",
        "close",
        "files_update",
        "statx",
        "read",
        "write",
        "fadvise",
        "madvise",
        "send",
        "recv",
        "openat2",
        "epoll_ctl",
        "splice",
        "provide_buffers",
        "remove_buffers",
        "tee",
        "shutdown",
        "renameat",
        "unlinkat",
        "mkdirat",
        "symlinkat",
        "linkat",
        "msg_ring",
        "fsetxattr",
        "setxattr",
        "fgetxattr",
        "getxattr",
        "socket",
        "uring_cmd",
        "send_zc",
        "sendmsg_zc",
        "read_multishot",
        "waitid",
        "futex_wait",
        "futex_wake",
        "futex_waitv",
        "fixed_fd_install",
        "ftruncate",
    ];
    NAMES.get(op as usize).copied()
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
        assert_eq!(name(SYS_RENAMEAT2), "renameat2");
        assert_eq!(name(SYS_UTIMENSAT), "utimensat");
        assert_eq!(name(SYS_IO_URING), "io_uring");
        assert_eq!(name(SYS_COUNT), "unknown");
        assert_eq!(name(u32::MAX), "unknown");
        assert!(is_write_family(SYS_WRITEV) && !is_write_family(SYS_OPEN));
        assert!(is_open_family(SYS_OPENAT) && !is_open_family(SYS_PWRITE64));
        assert!(is_delete(SYS_UNLINKAT) && is_delete(SYS_RENAME) && !is_delete(SYS_MKDIR));
        assert!(is_create_family(SYS_CREAT) && is_create_family(SYS_SYMLINKAT));
        assert!(!is_create_family(SYS_FSYNC) && !is_create_family(SYS_TRUNCATE));
        assert!(is_heartbeat(SYS_UTIMENSAT) && !is_heartbeat(SYS_WRITE));
    }

    #[test]
    fn io_uring_opcodes_follow_the_uapi_numbering() {
        assert_eq!(io_uring_op_name(0), Some("nop"));
        assert_eq!(io_uring_op_name(17), Some("fallocate"));
        assert_eq!(io_uring_op_name(18), Some("openat"));
        assert_eq!(io_uring_op_name(23), Some("write"));
        assert_eq!(io_uring_op_name(36), Some("unlinkat"));
        assert_eq!(io_uring_op_name(55), Some("ftruncate"));
        assert_eq!(io_uring_op_name(56), None);
        assert_eq!(io_uring_op_name(u32::MAX), None);
    }

    #[test]
    fn ids_index_their_specs() {
        let ids = [
            (SYS_OPEN, "open"),
            (SYS_OPENAT, "openat"),
            (SYS_OPENAT2, "openat2"),
            (SYS_CREAT, "creat"),
            (SYS_FALLOCATE, "fallocate"),
            (SYS_CLOSE, "close"),
            (SYS_SENDFILE64, "sendfile64"),
            (SYS_UNLINK, "unlink"),
            (SYS_FUTIMESAT, "futimesat"),
        ];
        for (id, n) in ids {
            assert_eq!(name(id), n);
        }
    }

    #[test]
    fn every_spec_names_an_argument_source() {
        for (id, s) in SYSCALLS
            .iter()
            .enumerate()
            .skip(1)
            .take(SYS_IO_URING as usize)
        {
            let id = id as u32;
            assert!(
                s.fd_arg < 6 && s.dirfd_arg < 6 && s.path_arg < 6 && s.aux_arg < 6,
                "{}",
                s.name
            );
            let special = matches!(id, SYS_CLOSE | SYS_IO_URING);
            assert!(
                special || (s.fd_arg >= 0) != (s.path_arg >= 0),
                "{}: fd xor path",
                s.name
            );
            assert!(s.count != COUNT_ARG || s.count_arg >= 0, "{}", s.name);
        }
    }
}
