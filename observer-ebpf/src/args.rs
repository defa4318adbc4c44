//! A syscall's arguments at exit (from the user registers saved at entry) and where its path is
//! resolved from: the fd's file, the dirfd, the cwd, or an absolute name.

use aya_ebpf::helpers::{
    bpf_probe_read_user,
    generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
};
use observer_common::{
    event::{PATH_BASE_CWD, PATH_BASE_DIRFD},
    syscall::*,
};

use crate::kread::{dentry_ino_dev, fd_file, off, path_at, ptr_at};

pub const AT_FDCWD: i64 = -100;
const AT_EMPTY_PATH: u64 = 0x1000;
/// Vectored writes: how many iovecs are summed into `count`.
const IOV_SUM_MAX: u64 = 8;

#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

/// Where the reported path is resolved from.
#[derive(Clone, Copy)]
pub struct Base {
    /// `(vfsmount, dentry)` walked for the path; `(0, 0)` when unknown. (Not an `Option`: the
    /// payload of `None` is uninitialised and 5.10's verifier rejects reading it back.)
    pub path: (u64, u64),
    /// PATH_BASE_* flag for relative names.
    pub flags: u16,
    /// User pathname appended after the walk (0 = none).
    pub upath: u64,
}

/// The user registers saved at syscall entry (they still hold the arguments at exit). The branch
/// is on a read-only global, so the verifier only visits the side this kernel supports.
#[inline(always)]
pub fn user_regs(task: u64) -> u64 {
    if off!(regs_from_stack) != 0 {
        ptr_at(task, off!(task_stack))
            .unwrap_or(0)
            .wrapping_add(off!(stack_regs_off))
    } else {
        unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) as u64 }
    }
}

/// Syscall argument `i` (a constant in every instantiation).
#[inline(always)]
pub fn arg(regs: u64, i: i8) -> u64 {
    let off = match i {
        0 => off!(regs_arg[0]),
        1 => off!(regs_arg[1]),
        2 => off!(regs_arg[2]),
        3 => off!(regs_arg[3]),
        4 => off!(regs_arg[4]),
        _ => off!(regs_arg[5]),
    };
    regs_word(regs, off)
}

/// The word at `off` in the saved user registers. With `bpf_task_pt_regs` the pointer is typed
/// (BTF), so this is a plain load the kernel guards; from the task stack (before 5.15) it is a
/// probe read.
#[inline(always)]
pub fn regs_word(regs: u64, off: u64) -> u64 {
    if off!(regs_from_stack) != 0 {
        ptr_at(regs, off).unwrap_or(0)
    } else {
        crate::kread::btf_word(regs, off)
    }
}

#[inline(always)]
pub fn file_path(task: u64, fd: i64) -> (u64, u64) {
    fd_file(task, fd)
        .and_then(|f| path_at(f, off!(file_f_path)))
        .unwrap_or((0, 0))
}

/// Resolves what the record's path is built from.
#[inline(always)]
pub fn resolve_base(spec: SyscallSpec, task: u64, regs: u64) -> (Base, i32) {
    if spec.fd_arg >= 0 {
        let fd = arg(regs, spec.fd_arg) as i32;
        return (
            Base {
                path: file_path(task, fd as i64),
                flags: 0,
                upath: 0,
            },
            fd,
        );
    }
    if spec.path_arg < 0 {
        // No path source (close): the fd number only.
        return (
            Base {
                path: (0, 0),
                flags: 0,
                upath: 0,
            },
            arg(regs, 0) as i32,
        );
    }
    let dirfd = if spec.dirfd_arg >= 0 {
        arg(regs, spec.dirfd_arg) as i32 as i64
    } else {
        AT_FDCWD
    };
    let upath = arg(regs, spec.path_arg);
    if spec.path_kind == PATH_NULL_MEANS_FD {
        let empty = upath == 0
            || (arg(regs, spec.aux_arg) & AT_EMPTY_PATH != 0
                && unsafe { bpf_probe_read_user(upath as *const u8) }.unwrap_or(1) == 0);
        if empty {
            return (
                Base {
                    path: file_path(task, dirfd),
                    flags: 0,
                    upath: 0,
                },
                dirfd as i32,
            );
        }
    }
    (resolve_at(task, dirfd, upath), dirfd as i32)
}

impl Base {
    /// `(inode number, dev)` of the base dentry; zeros when there is none.
    #[inline(always)]
    pub fn ino_dev(&self) -> (u64, u32) {
        if self.path.1 != 0 {
            dentry_ino_dev(self.path.1)
        } else {
            (0, 0)
        }
    }
}

/// Base for a user pathname relative to `dirfd` (or the cwd, or absolute).
#[inline(always)]
pub fn resolve_at(task: u64, dirfd: i64, upath: u64) -> Base {
    let first = unsafe { bpf_probe_read_user(upath as *const u8) }.unwrap_or(0);
    if first == b'/' {
        return Base {
            path: (0, 0),
            flags: 0,
            upath,
        };
    }
    if dirfd == AT_FDCWD {
        let cwd = ptr_at(task, off!(task_fs))
            .and_then(|fs| path_at(fs, off!(fs_pwd)))
            .unwrap_or((0, 0));
        Base {
            path: cwd,
            flags: PATH_BASE_CWD,
            upath,
        }
    } else {
        Base {
            path: file_path(task, dirfd),
            flags: PATH_BASE_DIRFD,
            upath,
        }
    }
}

/// Sum of the lengths of the first iovecs of a vectored write.
#[inline(always)]
pub fn iov_sum(iov: u64, cnt: u64) -> u64 {
    let mut total = 0u64;
    for i in 0..IOV_SUM_MAX {
        if i >= cnt {
            break;
        }
        match unsafe { bpf_probe_read_user((iov + i * 16) as *const Iovec) } {
            Ok(v) => total = total.wrapping_add(v.len),
            Err(_) => break,
        }
    }
    total
}
