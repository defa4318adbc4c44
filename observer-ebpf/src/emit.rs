//! Exit path of every tracepoint program: filter, count, then (when wanted) build and send a
//! detail record. Instantiated per syscall from its const [`SyscallSpec`], so each program only
//! contains the code its argument layout needs.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_uid_gid, bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_probe_read_user,
    generated::{bpf_get_current_task, bpf_get_current_task_btf, bpf_task_pt_regs},
};
use observer_common::{
    config::{
        CONFIG_FEXIT_ACTIVE, COUNTER_EVENTS, COUNTER_FILTERED, COUNTER_HEARTBEAT_FAILED,
        COUNTER_HEARTBEAT_OK, COUNTER_PATH_INCOMPLETE, COUNTER_RING_DROPS, DeleteCounts, DirKey,
        FEATURE_CREATES, FEATURE_HEARTBEAT_WRITES, RuntimeConfig,
    },
    event::{
        AUX_HEARTBEAT_WRITE, EVENT_SYSCALL, EventHeader, HOOK_TRACEPOINT, PATH_BASE_CWD,
        PATH_BASE_DIRFD, PATH_BUF_SIZE, PATH_INCOMPLETE, PathInfo, SYSCALL_EVENT_PATH_OFFSET,
        SyscallEvent,
    },
    syscall::*,
};

use crate::{
    kread::{dentry_ino_dev, fd_file, off, path_at, ptr_at},
    maps::*,
    path::{append_user_tail, walk},
};

/// Largest errno value (`MAX_ERRNO`); more negative returns are not errors.
pub const MAX_ERRNO: i64 = 4095;

/// The errno of a syscall's or kernel function's return value; 0 for a success (or any value
/// that is not an error).
#[inline(always)]
pub fn errno_of(ret: i64) -> u32 {
    if (-MAX_ERRNO..0).contains(&ret) {
        (-ret) as u32
    } else {
        0
    }
}
pub const AT_FDCWD: i64 = -100;
const AT_REMOVEDIR: u64 = 0x200;
const AT_EMPTY_PATH: u64 = 0x1000;
const O_WRONLY: u32 = 0o1;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const O_EXCL: u32 = 0o200;
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
fn resolve_base(spec: SyscallSpec, task: u64, regs: u64) -> (Base, i32) {
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

/// Whether a call of `class` gets a detail record (counting is separate and always exact).
#[inline(always)]
pub fn wants_record(cfg: &RuntimeConfig, class: u8, masked: bool) -> bool {
    let sampled = cfg.delete_sample != 0
        && (cfg.delete_sample == 1 || unsafe { bpf_get_prandom_u32() } % cfg.delete_sample == 0);
    masked || class == CLASS_HEARTBEAT || (class == CLASS_DELETE && sampled)
}

/// Load-time features (`FEATURE_*`), written by the daemon before load.
#[unsafe(no_mangle)]
pub static OBSERVER_FEATURES: u32 = 0;

/// Entry point of every `sys_exit_*` program.
#[inline(always)]
pub fn on_exit<const ID: u32>(ret: i64) {
    let spec = const { spec_of(ID) };
    if is_write_family(ID)
        && unsafe { core::ptr::read_volatile(&raw const OBSERVER_FEATURES) }
            & FEATURE_HEARTBEAT_WRITES
            != 0
    {
        let _: Option<()> = heartbeat_write(ID, spec, ret);
    }
    if is_create_family(ID) && ret >= 0 {
        if unsafe { core::ptr::read_volatile(&raw const OBSERVER_FEATURES) } & FEATURE_CREATES != 0
        {
            let _: Option<()> = created(ID, spec, ret);
        }
        return;
    }
    if spec.class == CLASS_ERROR && ret >= 0 {
        return; // the hot path: a successful call
    }
    let errno = errno_of(ret);
    if errno == 0 && ret < 0 {
        return; // a large negative return that is not an error
    }
    let Some(cfg) = runtime() else { return };
    let masked = errno != 0 && cfg.watches_errno(errno);
    if spec.class == CLASS_ERROR && !masked {
        return;
    }
    let _: Option<()> = slow_path(ID, spec, cfg, ret, errno, masked, false);
}

/// A successful create, sampled for the leak detector. Opens count only with O_CREAT plus
/// O_EXCL or O_TRUNC (a new or replaced file, not an append to an existing log).
#[inline(always)]
fn created(id: u32, spec: SyscallSpec, ret: i64) -> Option<()> {
    let cfg = runtime()?;
    let n = cfg.create_sample;
    if n == 0 || (n != 1 && unsafe { bpf_get_prandom_u32() } % n != 0) {
        return None;
    }
    if is_open_family(id) && id != SYS_CREAT {
        let regs = user_regs(unsafe { bpf_get_current_task() });
        let flags = match id {
            SYS_OPEN => arg(regs, 1) as u32,
            SYS_OPENAT => arg(regs, 2) as u32,
            _ => unsafe { bpf_probe_read_user(arg(regs, 2) as *const u64) }.unwrap_or(0) as u32,
        };
        if flags & O_CREAT == 0 || flags & (O_EXCL | O_TRUNC) == 0 {
            return None;
        }
    }
    slow_path(id, spec, cfg, ret, 0, false, true)
}

/// A write (success or failure) to a configured heartbeat file: counted and reported as a
/// heartbeat. The regular error path still handles the failure as an error.
#[inline(always)]
fn heartbeat_write(id: u32, spec: SyscallSpec, ret: i64) -> Option<()> {
    let errno = errno_of(ret);
    if errno == 0 && ret < 0 {
        return None;
    }
    let task = unsafe { bpf_get_current_task() };
    let regs = user_regs(task);
    let fd = arg(regs, 0) as i32;
    let (mnt, dentry) = file_path(task, fd as i64);
    if dentry == 0 {
        return None;
    }
    let (ino, dev) = dentry_ino_dev(dentry);
    unsafe { OBSERVER_HEARTBEAT_FILES.get(DirKey { dev, _pad0: 0, ino }) }?;
    let cfg = runtime()?;
    admitted(cfg)?;
    bump(if errno == 0 {
        COUNTER_HEARTBEAT_OK
    } else {
        COUNTER_HEARTBEAT_FAILED
    });
    let (buf, ev, area) = record(id, errno, ret)?;
    ev.fd = fd;
    ev.aux = AUX_HEARTBEAT_WRITE;
    ev.count = match spec.count {
        COUNT_IOV => iov_sum(arg(regs, 1), arg(regs, 2)),
        _ => arg(regs, 2),
    };
    ev.ino = ino;
    ev.dev = dev;
    ev.nr = regs_word(regs, off!(regs_nr)) as i32;
    walk(area, mnt, dentry, &mut ev.path);
    send(buf, ev)
}

#[inline(always)]
fn slow_path(
    id: u32,
    spec: SyscallSpec,
    cfg: &RuntimeConfig,
    ret: i64,
    errno: u32,
    masked: bool,
    created: bool,
) -> Option<()> {
    let pid_tgid = admitted(cfg)?;
    let task = unsafe { bpf_get_current_task() };
    let regs = user_regs(task);
    let (base, fd) = resolve_base(spec, task, regs);
    // Absolute names are not resolved in the kernel: their filesystem is unknown here (0).
    let (ino, dev) = base.ino_dev();
    if !dev_watched(cfg, dev) {
        bump(COUNTER_FILTERED);
        return None;
    }
    let tgid = (pid_tgid >> 32) as u32;
    if fexit_covers(id) && cfg.flags & CONFIG_FEXIT_ACTIVE != 0 {
        let tid = pid_tgid as u32;
        if unsafe { OBSERVER_SEEN.get(tid) }.is_some_and(|seen| *seen == id) {
            let _: Result<(), _> = OBSERVER_SEEN.remove(tid);
            return None; // an fexit program reported this call already
        }
    }
    let aux = if spec.aux_arg >= 0 {
        arg(regs, spec.aux_arg)
    } else {
        0
    };
    if spec.class == CLASS_DELETE {
        let removedir = id == SYS_RMDIR || (id == SYS_UNLINKAT && aux & AT_REMOVEDIR != 0);
        let rename = id == SYS_RENAME || id == SYS_RENAMEAT || id == SYS_RENAMEAT2;
        let add = |c: &mut DeleteCounts| {
            if errno != 0 {
                c.failed += 1;
            } else if rename {
                c.renames += 1;
            } else if removedir {
                c.dirs += 1;
            } else {
                c.files += 1;
            }
        };
        add_deletion(tgid, DirKey { dev, _pad0: 0, ino }, add);
    } else if spec.class == CLASS_HEARTBEAT {
        bump(if errno == 0 {
            COUNTER_HEARTBEAT_OK
        } else {
            COUNTER_HEARTBEAT_FAILED
        });
    }
    if errno != 0 && (masked || spec.class != CLASS_ERROR) {
        count_error(id, errno, dev);
    }
    if !created && !wants_record(cfg, spec.class, masked) {
        return None;
    }

    let (buf, ev, area) = record(id, errno, ret)?;
    ev.fd = fd;
    ev.flags = match id {
        SYS_OPEN => arg(regs, 1) as u32,
        SYS_OPENAT => arg(regs, 2) as u32,
        SYS_CREAT => O_CREAT | O_WRONLY | O_TRUNC,
        // openat2(dirfd, path, struct open_how *how, size): how->flags is the first u64.
        SYS_OPENAT2 => {
            unsafe { bpf_probe_read_user(arg(regs, 2) as *const u64) }.unwrap_or(0) as u32
        }
        _ => 0,
    };
    ev.count = match spec.count {
        COUNT_ARG => arg(regs, spec.count_arg),
        COUNT_IOV => iov_sum(arg(regs, 1), arg(regs, 2)),
        _ => 0,
    };
    ev.ino = ino;
    ev.dev = dev;
    ev.aux = aux as u32;
    ev.nr = regs_word(regs, off!(regs_nr)) as i32;
    ev.path.flags = base.flags;
    let (mnt, dentry) = base.path;
    if dentry != 0 {
        walk(area, mnt, dentry, &mut ev.path);
    } else if (base.upath == 0 && spec.path_arg >= 0) || spec.fd_arg >= 0 {
        ev.path.flags |= PATH_INCOMPLETE;
    }
    if base.upath != 0 {
        append_user_tail(area, base.upath, &mut ev.path);
    }
    send(buf, ev)
}

/// The per-CPU scratch record with its header and identity (pid, uid, comm, cgroup) filled in.
#[inline(always)]
pub fn record(
    id: u32,
    errno: u32,
    ret: i64,
) -> Option<(*mut u8, &'static mut SyscallEvent, *mut u8)> {
    let buf = OBSERVER_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch slot, exclusively ours while this program runs.
    let ev: &mut SyscallEvent = unsafe { &mut (*buf).event };
    let area: *mut u8 = unsafe { (*buf).path.as_mut_ptr() };
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    // Every field, every time: a field added to the record cannot keep the previous event's
    // value (the compiler asks for it here).
    *ev = SyscallEvent {
        header: EventHeader {
            kind: EVENT_SYSCALL,
            size: 0,
            ktime_ns: unsafe { bpf_ktime_get_ns() },
            tgid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            uid: uid_gid as u32,
            gid: (uid_gid >> 32) as u32,
            cgroup_id: unsafe { bpf_get_current_cgroup_id() },
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
        },
        syscall: id,
        errno,
        ret,
        fd: -1,
        flags: 0,
        count: 0,
        ino: 0,
        dev: 0,
        aux: 0,
        nr: -1,
        hook: HOOK_TRACEPOINT,
        path: PathInfo {
            len: 0,
            ncomp: 0,
            flags: 0,
            tail_off: 0,
        },
    };
    Some((buf.cast::<u8>(), ev, area))
}

/// Updates the deletion counters of one call.
#[inline(always)]
pub fn count_delete(tgid: u32, dir: DirKey, errno: u32, removedir: bool, rename: bool, over: bool) {
    let add = |c: &mut DeleteCounts| {
        if errno != 0 {
            c.failed += 1;
        } else if rename {
            c.renames += 1;
            if over {
                c.renames_over += 1;
            }
        } else if removedir {
            c.dirs += 1;
        } else {
            c.files += 1;
        }
    };
    add_deletion(tgid, dir, add);
}

/// Sends the record in the scratch buffer at `buf` (whose event is `ev`).
#[inline(always)]
pub fn send(buf: *mut u8, ev: &mut SyscallEvent) -> Option<()> {
    if ev.path.flags & PATH_INCOMPLETE != 0 {
        bump(COUNTER_PATH_INCOMPLETE);
    }
    let len = core::cmp::min(ev.path.len as usize, PATH_BUF_SIZE);
    let size = SYSCALL_EVENT_PATH_OFFSET + len;
    ev.header.size = size as u32;
    // SAFETY: `size` <= size_of::<SyscallEventBuf>(), the scratch value.
    let bytes = unsafe { core::slice::from_raw_parts(buf, size) };
    // Wake the reader only once the ring holds a batch; it also drains on a short timer, so a
    // trickle of records costs no wakeup per record (BPF_RB_NO_WAKEUP / BPF_RB_FORCE_WAKEUP).
    let avail = OBSERVER_EVENTS.query(0 /* BPF_RB_AVAIL_DATA */);
    let size_now = OBSERVER_EVENTS.query(1 /* BPF_RB_RING_SIZE */);
    let flags = if avail > size_now / 8 { 2 } else { 1 };
    if OBSERVER_EVENTS.output::<[u8]>(bytes, flags).is_ok() {
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
