//! The fexit set: programs on VFS functions, where the kernel allows BPF trampolines. They see
//! in-kernel callers too (nfsd, overlayfs, coredumps), the exact parent directory of a deletion,
//! and whether a rename replaced a file. Each marks `OBSERVER_SEEN` so the `sys_exit` program of
//! the same syscall does not report the call again; failures that happen before the VFS function
//! (a failed lookup, say) are still reported by the `sys_exit` programs.
//!
//! Prototypes relied on (argument positions; variants are chosen in userspace from BTF):
//!   ssize_t vfs_write(struct file *, const char __user *, size_t, loff_t *)
//!   long do_sys_openat2(int dfd, const char __user *filename, struct open_how *how)
//!   int vfs_unlink([struct mnt_idmap * | struct user_namespace *,] struct inode *dir,
//!                  struct dentry *, struct inode **delegated)
//!   int vfs_rmdir([idmap,] struct inode *dir, struct dentry *)
//!   int vfs_rename(struct renamedata *)       (5.12+)
//!   int vfs_rename(struct inode *old_dir, struct dentry *old, struct inode *new_dir,
//!                  struct dentry *new, struct inode **delegated, unsigned int flags)   (5.10)
//!   int vfs_utimes(const struct path *, struct timespec64 *)

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, generated::bpf_get_current_task},
    macros::fexit,
    programs::FExitContext,
};
use observer_common::{
    config::{COUNTER_FILTERED, COUNTER_HEARTBEAT_FAILED, COUNTER_HEARTBEAT_OK, DirKey},
    event::HOOK_FEXIT,
    syscall::*,
};

use crate::{
    args::{Base, arg, regs_word, resolve_at, user_regs},
    emit::{errno_of, wants_record},
    kread::{dentry_ino_dev, off, path_at, ptr_at, u32_at},
    maps::*,
    path::{append_user_tail, walk},
    record::{count_delete, record, send},
};

/// `PF_KTHREAD` task flag (include/linux/sched.h; unchanged since 2.6).
const PF_KTHREAD: u32 = 0x0020_0000;

/// Who is calling.
struct Caller {
    tgid: u32,
    regs: u64,
    id: u32,
}

/// Whether `id` is a syscall that reaches the VFS function whose fallback id is `fallback`.
#[inline(always)]
fn reaches(fallback: u32, id: u32) -> bool {
    match fallback {
        SYS_VFS_WRITE => matches!(id, SYS_WRITE | SYS_PWRITE64),
        SYS_VFS_OPEN => matches!(id, SYS_OPEN | SYS_OPENAT | SYS_OPENAT2 | SYS_CREAT),
        SYS_VFS_UNLINK => matches!(id, SYS_UNLINK | SYS_UNLINKAT),
        SYS_VFS_RMDIR => matches!(id, SYS_RMDIR | SYS_UNLINKAT),
        SYS_VFS_RENAME => matches!(id, SYS_RENAME | SYS_RENAMEAT | SYS_RENAMEAT2),
        _ => matches!(id, SYS_UTIMENSAT | SYS_UTIMES | SYS_UTIME | SYS_FUTIMESAT),
    }
}

/// Identifies the caller and marks the call as reported for its `sys_exit` program. `None`
/// when the caller is not observed (the observer itself, or filtered out).
#[inline(always)]
fn caller(fallback: u32, cfg: &observer_common::config::RuntimeConfig) -> Option<Caller> {
    let pid_tgid = admitted(cfg)?;
    let task = unsafe { bpf_get_current_task() };
    let kthread = u32_at(task, off!(task_flags)).unwrap_or(0) & PF_KTHREAD != 0;
    let regs = if kthread { 0 } else { user_regs(task) };
    let nr = if regs == 0 {
        u64::MAX
    } else {
        regs_word(regs, off!(regs_nr))
    };
    let mapped = if nr < NR_TABLE_SIZE as u64 {
        OBSERVER_NR_TO_ID.get(nr as u32).copied().unwrap_or(0)
    } else {
        0
    };
    let id = if reaches(fallback, mapped) {
        mapped
    } else {
        fallback
    };
    if id != fallback {
        let _: Result<(), _> = OBSERVER_SEEN.insert(pid_tgid as u32, id, 0);
    }
    Some(Caller {
        tgid: (pid_tgid >> 32) as u32,
        regs,
        id,
    })
}

/// The return value of a function returning `int`: the trampoline stores it zero-extended in a
/// 64-bit slot, so it must be read as 32 bits and sign-extended.
#[inline(always)]
fn int_ret(ctx: &FExitContext, n: usize) -> i64 {
    ctx.arg::<i32>(n) as i64
}

/// One fexit program per row: `program => "function" |ctx| body`. Each must be a variant of its
/// function in `observer_common::names::FEXIT_SET` (the daemon's attach plan), checked at
/// compile time, so the plan and the programs cannot drift apart.
macro_rules! fexit_programs {
    ($($prog:ident => $func:literal |$ctx:ident| $body:expr;)*) => {$(
        const _: () = assert!(
            observer_common::names::fexit_planned(stringify!($prog), $func),
            concat!(stringify!($prog), " is not in FEXIT_SET under ", $func)
        );
        #[fexit(function = $func)]
        pub fn $prog($ctx: FExitContext) -> u32 {
            let _: Option<()> = $body;
            0
        }
    )*};
}

fexit_programs! {
    fso_fx_vfs_write => "vfs_write" |ctx| write_exit(&ctx);
    fso_fx_do_sys_openat2 => "do_sys_openat2" |ctx| open_exit(&ctx);
    fso_fx_vfs_unlink3 => "vfs_unlink" |ctx| delete_call(
        SYS_VFS_UNLINK, int_ret(&ctx, 3), ctx.arg(0), ctx.arg(1), false, false);
    fso_fx_vfs_unlink4 => "vfs_unlink" |ctx| delete_call(
        SYS_VFS_UNLINK, int_ret(&ctx, 4), ctx.arg(1), ctx.arg(2), false, false);
    fso_fx_vfs_rmdir2 => "vfs_rmdir" |ctx| delete_call(
        SYS_VFS_RMDIR, int_ret(&ctx, 2), ctx.arg(0), ctx.arg(1), true, false);
    fso_fx_vfs_rmdir3 => "vfs_rmdir" |ctx| delete_call(
        SYS_VFS_RMDIR, int_ret(&ctx, 3), ctx.arg(1), ctx.arg(2), true, false);
    fso_fx_vfs_rename1 => "vfs_rename" |ctx| {
        let rd: u64 = ctx.arg(0);
        rename_call(
            int_ret(&ctx, 1),
            ptr_at(rd, off!(rd_old_dentry)).unwrap_or(0),
            ptr_at(rd, off!(rd_new_dir)).unwrap_or(0),
            ptr_at(rd, off!(rd_new_dentry)).unwrap_or(0),
        )
    };
    fso_fx_vfs_rename6 => "vfs_rename" |ctx| rename_call(
        int_ret(&ctx, 6), ctx.arg(1), ctx.arg(2), ctx.arg(3));
    fso_fx_vfs_utimes => "vfs_utimes" |ctx| utimes_call(int_ret(&ctx, 2), ctx.arg(0), ctx.arg(1));
}

#[inline(always)]
fn write_exit(ctx: &FExitContext) -> Option<()> {
    let ret: i64 = ctx.arg(4);
    if ret >= 0 {
        return None;
    }
    error_call(SYS_VFS_WRITE, ret, || {
        let file: u64 = ctx.arg(0);
        let path = path_at(file, off!(file_f_path)).unwrap_or((0, 0));
        (
            Base {
                path,
                flags: 0,
                upath: 0,
            },
            ctx.arg::<u64>(2),
            0,
        )
    })
}

#[inline(always)]
fn open_exit(ctx: &FExitContext) -> Option<()> {
    let ret: i64 = ctx.arg(3);
    if ret >= 0 {
        return None;
    }
    error_call(SYS_VFS_OPEN, ret, || {
        let task = unsafe { bpf_get_current_task() };
        let dfd = ctx.arg::<i32>(0) as i64;
        let how: u64 = ctx.arg(2);
        // struct open_how (uapi) starts with `__u64 flags`.
        let flags = unsafe { bpf_probe_read_kernel(how as *const u64) }.unwrap_or(0);
        (resolve_at(task, dfd, ctx.arg::<u64>(1)), 0, flags as u32)
    })
}

/// Failure of a write/open (error class): count, then report.
#[inline(always)]
fn error_call(fallback: u32, ret: i64, what: impl FnOnce() -> (Base, u64, u32)) -> Option<()> {
    let errno = errno_of(ret);
    let cfg = runtime()?;
    if errno == 0 || !cfg.watches_errno(errno) {
        return None;
    }
    let who = caller(fallback, cfg)?;
    let (base, count, flags) = what();
    let (ino, dev) = base.ino_dev();
    if !dev_watched(cfg, dev) {
        bump(COUNTER_FILTERED);
        return None;
    }
    count_error(who.id, errno, dev);
    let (buf, ev, area) = record(who.id, errno, ret)?;
    ev.hook = HOOK_FEXIT;
    ev.count = count;
    ev.flags = flags;
    ev.ino = ino;
    ev.dev = dev;
    if who.regs != 0 {
        ev.nr = regs_word(who.regs, off!(regs_nr)) as i32;
        ev.fd = match who.id {
            SYS_WRITE | SYS_PWRITE64 | SYS_OPENAT | SYS_OPENAT2 => arg(who.regs, 0) as i32,
            SYS_OPEN | SYS_CREAT => -100,
            _ => -1,
        };
    }
    ev.path.flags = base.flags;
    if base.path.1 != 0 {
        walk(area, base.path.0, base.path.1, &mut ev.path);
    }
    if base.upath != 0 {
        append_user_tail(area, base.upath, &mut ev.path);
    }
    send(buf, ev)
}

/// A deletion seen in the VFS: exact parent directory `dir` (an inode).
#[inline(always)]
fn delete_call(
    fallback: u32,
    ret: i64,
    dir: u64,
    dentry: u64,
    removedir: bool,
    over: bool,
) -> Option<()> {
    let errno = errno_of(ret);
    let cfg = runtime()?;
    let who = caller(fallback, cfg)?;
    let dev = ptr_at(dir, off!(inode_i_sb))
        .and_then(|sb| u32_at(sb, off!(sb_s_dev)))
        .unwrap_or(0);
    let ino = ptr_at(dir, off!(inode_i_ino)).unwrap_or(0);
    if !dev_watched(cfg, dev) {
        bump(COUNTER_FILTERED);
        return None;
    }
    let rename = fallback == SYS_VFS_RENAME;
    count_delete(
        who.tgid,
        DirKey { dev, _pad0: 0, ino },
        errno,
        removedir,
        rename,
        over,
    );
    if errno != 0 {
        count_error(who.id, errno, dev);
    }
    let masked = errno != 0 && cfg.watches_errno(errno);
    if !wants_record(cfg, CLASS_DELETE, masked) {
        return None;
    }
    let (buf, ev, area) = record(who.id, errno, ret)?;
    ev.hook = HOOK_FEXIT;
    ev.ino = ino;
    ev.dev = dev;
    ev.aux = over as u32;
    walk(area, 0, dentry, &mut ev.path);
    send(buf, ev)
}

/// After a successful non-exchange rename the old dentry carries the new name and the new
/// dentry still holds the replaced inode (if any) until it is released.
#[inline(always)]
fn rename_call(ret: i64, old_dentry: u64, new_dir: u64, new_dentry: u64) -> Option<()> {
    let replaced = ptr_at(new_dentry, off!(dentry_d_inode)).unwrap_or(0) != 0;
    let (shown, over) = if ret == 0 {
        (old_dentry, replaced)
    } else {
        (new_dentry, false)
    };
    delete_call(SYS_VFS_RENAME, ret, new_dir, shown, false, over)
}

#[inline(always)]
fn utimes_call(ret: i64, path: u64, times: u64) -> Option<()> {
    let errno = errno_of(ret);
    let cfg = runtime()?;
    let who = caller(SYS_VFS_UTIMES, cfg)?;
    let (mnt, dentry) = path_at(path, 0)?;
    let (ino, dev) = dentry_ino_dev(dentry);
    if !dev_watched(cfg, dev) {
        bump(COUNTER_FILTERED);
        return None;
    }
    bump(if errno == 0 {
        COUNTER_HEARTBEAT_OK
    } else {
        COUNTER_HEARTBEAT_FAILED
    });
    if errno != 0 {
        count_error(who.id, errno, dev);
    } else if !crate::refresh::vfs_sends(cfg, times, who.tgid, dev, ino) {
        return None;
    }
    let (buf, ev, area) = record(who.id, errno, ret)?;
    ev.hook = HOOK_FEXIT;
    ev.ino = ino;
    ev.dev = dev;
    walk(area, mnt, dentry, &mut ev.path);
    send(buf, ev)
}
