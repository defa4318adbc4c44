//! Failure path: count, then build and send a detail record.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_user,
    generated::{bpf_get_current_task, bpf_get_current_task_btf, bpf_task_pt_regs},
};
use observer_common::{
    config::{COUNTER_EVENTS, COUNTER_PATH_INCOMPLETE, COUNTER_RING_DROPS},
    event::{
        EVENT_SYSCALL, PATH_BASE_CWD, PATH_BASE_DIRFD, PATH_BUF_SIZE, PATH_INCOMPLETE,
        SYSCALL_EVENT_PATH_OFFSET, SyscallEvent,
    },
    syscall::*,
};

use crate::{
    kread::{dentry_ino_dev, fd_file, off, path_at, ptr_at},
    maps::{OBSERVER_EVENTS, OBSERVER_SCRATCH, bump, count_error, errno_watched},
    path::{append_user_tail, walk},
};

/// Largest errno value (`MAX_ERRNO`); smaller negative returns are not errors.
const MAX_ERRNO: i64 = 4095;
const AT_FDCWD: i64 = -100;
const O_WRONLY: u32 = 0o1;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
/// Vectored writes: how many iovecs are summed into `count`.
const IOV_SUM_MAX: u64 = 8;

#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

#[inline(always)]
pub fn on_failure(sys: u32, ret: i64) {
    if ret < -MAX_ERRNO {
        return;
    }
    let errno = (-ret) as u32;
    if !errno_watched(errno) {
        return;
    }
    count_error(sys, errno);
    let _ = build_and_send(sys, errno, ret);
}

#[inline(always)]
fn build_and_send(sys: u32, errno: u32, ret: i64) -> Option<()> {
    let buf = OBSERVER_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch slot, exclusively ours while this program runs.
    let ev: &mut SyscallEvent = unsafe { &mut (*buf).event };
    let area: *mut u8 = unsafe { (*buf).path.as_mut_ptr() };

    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    ev.header.kind = EVENT_SYSCALL;
    ev.header.ktime_ns = unsafe { bpf_ktime_get_ns() };
    ev.header.tgid = (pid_tgid >> 32) as u32;
    ev.header.tid = pid_tgid as u32;
    ev.header.uid = uid_gid as u32;
    ev.header.gid = (uid_gid >> 32) as u32;
    ev.header.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    ev.header.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    ev.syscall = sys;
    ev.errno = errno;
    ev.ret = ret;
    ev.fd = -1;
    ev.flags = 0;
    ev.count = 0;
    ev.ino = 0;
    ev.dev = 0;
    ev._pad0 = 0;
    ev.path = Default::default();

    let task = unsafe { bpf_get_current_task() };
    // The user registers saved at syscall entry still hold the arguments at exit. The branch
    // is on a read-only global, so the verifier only visits the side this kernel supports.
    let regs = if off!(regs_from_stack) != 0 {
        ptr_at(task, off!(task_stack))
            .unwrap_or(0)
            .wrapping_add(off!(stack_regs_off))
    } else {
        unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) as u64 }
    };
    let arg = |i: usize| -> u64 {
        match i {
            0 => ptr_at(regs, off!(regs_arg[0])),
            1 => ptr_at(regs, off!(regs_arg[1])),
            2 => ptr_at(regs, off!(regs_arg[2])),
            _ => ptr_at(regs, off!(regs_arg[3])),
        }
        .unwrap_or(0)
    };

    if is_write_family(sys) {
        let fd = arg(0) as i32;
        ev.fd = fd;
        ev.count = if sys == SYS_WRITE || sys == SYS_PWRITE64 {
            arg(2)
        } else {
            iov_sum(arg(1), arg(2))
        };
        match fd_file(task, fd as i64).and_then(|f| path_at(f, off!(file_f_path))) {
            Some((mnt, dentry)) => {
                walk(area, mnt, dentry, &mut ev.path);
                (ev.ino, ev.dev) = dentry_ino_dev(dentry);
            }
            None => ev.path.flags |= PATH_INCOMPLETE,
        }
    } else {
        let (dirfd, upath, flags) = match sys {
            SYS_OPEN => (AT_FDCWD, arg(0), arg(1) as u32),
            SYS_CREAT => (AT_FDCWD, arg(0), O_CREAT | O_WRONLY | O_TRUNC),
            SYS_OPENAT => (arg(0) as i32 as i64, arg(1), arg(2) as u32),
            // openat2(dirfd, path, struct open_how *how, size): how->flags is the first u64.
            _ => (
                arg(0) as i32 as i64,
                arg(1),
                unsafe { bpf_probe_read_user(arg(2) as *const u64) }.unwrap_or(0) as u32,
            ),
        };
        ev.fd = dirfd as i32;
        ev.flags = flags;
        let first = unsafe { bpf_probe_read_user(upath as *const u8) }.unwrap_or(0);
        if first != b'/' {
            let base = if dirfd == AT_FDCWD {
                ev.path.flags |= PATH_BASE_CWD;
                ptr_at(task, off!(task_fs)).and_then(|fs| path_at(fs, off!(fs_pwd)))
            } else {
                ev.path.flags |= PATH_BASE_DIRFD;
                fd_file(task, dirfd).and_then(|f| path_at(f, off!(file_f_path)))
            };
            match base {
                Some((mnt, dentry)) => {
                    walk(area, mnt, dentry, &mut ev.path);
                    (ev.ino, ev.dev) = dentry_ino_dev(dentry);
                }
                None => ev.path.flags |= PATH_INCOMPLETE,
            }
        }
        append_user_tail(area, upath, &mut ev.path);
    }

    if ev.path.flags & PATH_INCOMPLETE != 0 {
        bump(COUNTER_PATH_INCOMPLETE);
    }
    let len = core::cmp::min(ev.path.len as usize, PATH_BUF_SIZE);
    let size = SYSCALL_EVENT_PATH_OFFSET + len;
    ev.header.size = size as u32;
    // SAFETY: `size` <= size_of::<SyscallEventBuf>(), the scratch value.
    let bytes = unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), size) };
    if OBSERVER_EVENTS.output::<[u8]>(bytes, 0).is_ok() {
        bump(COUNTER_EVENTS);
    } else {
        bump(COUNTER_RING_DROPS);
    }
    Some(())
}

/// Sum of the lengths of the first iovecs of a vectored write.
#[inline(always)]
fn iov_sum(iov: u64, cnt: u64) -> u64 {
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
