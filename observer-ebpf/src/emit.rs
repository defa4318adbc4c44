//! Exit path of every tracepoint program: filter, count, then (when wanted) build and send a
//! detail record. Instantiated per syscall from its const [`SyscallSpec`], so each program only
//! contains the code its argument layout needs.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_prandom_u32, bpf_probe_read_user,
        generated::{bpf_get_current_task, bpf_probe_read_user_str},
    },
};
use observer_common::{
    config::{
        CONFIG_FEXIT_ACTIVE, COUNTER_FILTERED, COUNTER_HEARTBEAT_FAILED, COUNTER_HEARTBEAT_OK,
        DirKey, EntryCounts, FEATURE_CREATES, FEATURE_GROWTH, FEATURE_HEARTBEAT_WRITES,
        FEATURE_LOCK_ACQUIRE, FMODE_CREATED, LOCK_NAME_READ_MAX, LOCK_SUFFIX_LCK, LOCK_SUFFIX_LOCK,
        LOCK_SUFFIX_UPPER, RuntimeConfig,
    },
    event::{
        AUX_HEARTBEAT_WRITE, HOOK_DIR_NAME, PATH_BUF_SIZE, PATH_COMPONENT_AREA, PATH_INCOMPLETE,
    },
    syscall::*,
};

use crate::{
    args::{arg, file_path, iov_sum, regs_word, resolve_base, user_regs},
    kread::{dentry_ino_dev, fd_file, off, path_at, ptr_at, u32_at},
    maps::*,
    path::{append_user_tail, walk},
    record::{record, send},
    refresh,
};

const O_WRONLY: u32 = 0o1;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const O_EXCL: u32 = 0o200;
const AT_REMOVEDIR: u64 = 0x200;

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

/// Whether a call of `class` gets a detail record (counting is separate and always exact).
#[inline(always)]
pub fn wants_record(cfg: &RuntimeConfig, class: u8, masked: bool) -> bool {
    let sampled = cfg.delete_sample != 0
        && (cfg.delete_sample == 1 || unsafe { bpf_get_prandom_u32() } % cfg.delete_sample == 0);
    masked || class == CLASS_HEARTBEAT || (class == CLASS_DELETE && sampled)
}

/// Entry point of every `sys_exit_*` program.
#[inline(always)]
pub fn on_exit<const ID: u32, C: EbpfContext>(ctx: &C, ret: i64) {
    let spec = const { spec_of(ID) };
    if is_write_family(ID) && features() & FEATURE_HEARTBEAT_WRITES != 0 {
        let _: Option<()> = heartbeat_write(ID, spec, ret);
    }
    if is_create_family(ID) && ret >= 0 {
        let features = features();
        if features & FEATURE_GROWTH != 0 {
            let _: Option<()> = count_growth(ID, spec, ret);
        }
        if features & FEATURE_LOCK_ACQUIRE != 0 && lock_acquired(ID, spec) {
            // Always reported, never sampled: the lock guard needs every acquisition.
            if let Some(cfg) = runtime() {
                let _: Option<()> = slow_path(ID, spec, cfg, ret, 0, false, true);
            }
        } else if features & FEATURE_CREATES != 0 {
            let _: Option<()> = created(ID, spec, ret);
        }
        if features & FEATURE_GROWTH != 0 {
            finish(ctx);
        }
        return;
    }
    if spec.class == CLASS_ERROR && ret >= 0 {
        return; // the hot path: a successful call
    }
    if spec.class == CLASS_HEARTBEAT && ret == 0 {
        let _: Option<()> = heartbeat_success(ID, spec, ret);
        return;
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
    if spec.class == CLASS_DELETE && features() & FEATURE_GROWTH != 0 {
        finish(ctx);
    }
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
        let flags = open_flags(id, user_regs(unsafe { bpf_get_current_task() }));
        if flags & O_CREAT == 0 || flags & (O_EXCL | O_TRUNC) == 0 {
            return None;
        }
    }
    slow_path(id, spec, cfg, ret, 0, false, true)
}

/// A successful create, counted for growth: an open counts when it created its file
/// (`FMODE_CREATED`), keyed by the new file's own directory; mkdir, mknod, link and symlink by
/// the directory their name was resolved against (the dirfd or the cwd; an absolute name
/// counts for no directory: dev 0). The first count in a directory names it.
#[inline(always)]
fn count_growth(id: u32, spec: SyscallSpec, ret: i64) -> Option<()> {
    let task = unsafe { bpf_get_current_task() };
    let regs = user_regs(task);
    // An open without O_CREAT (most opens: reads) costs only its flags.
    if is_open_family(id) && open_flags(id, regs) & O_CREAT == 0 {
        return None;
    }
    let cfg = runtime()?;
    let pid_tgid = admitted(cfg)?;
    let (mnt, dir) = if is_open_family(id) {
        let file = fd_file(task, ret)?;
        if u32_at(file, off!(file_f_mode))? & FMODE_CREATED == 0 {
            return None; // it existed already
        }
        let (mnt, dentry) = path_at(file, off!(file_f_path))?;
        (mnt, ptr_at(dentry, off!(dentry_d_parent))?)
    } else {
        resolve_base(spec, task, regs).0.path
    };
    let (ino, dev) = dentry_ino_dev(dir);
    if !dev_watched(cfg, dev) {
        bump(COUNTER_FILTERED);
        return None;
    }
    let mkdir = id == SYS_MKDIR || id == SYS_MKDIRAT;
    let key = DirKey { dev, _pad0: 0, ino };
    let add = |c: &mut EntryCounts| {
        if mkdir {
            c.mkdirs += 1;
        } else {
            c.created += 1;
        }
    };
    if add_entries::<true>((pid_tgid >> 32) as u32, key, add) {
        name_dir(id, mnt, dir, key);
    }
    Some(())
}

/// Asks for a directory the entry counters key for the first time to be named: the program
/// ends with a tail call to the naming program ([`name_requested`]), which sends it.
#[inline(always)]
fn name_dir(id: u32, mnt: u64, dir: u64, key: DirKey) {
    if mnt == 0 || dir == 0 || key.ino == 0 {
        return;
    }
    if let Some(r) = OBSERVER_NAME_REQUEST.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, exclusively ours while this program (and its tail) runs.
        let r = unsafe { &mut *r };
        r.id = id;
        r.mnt = mnt;
        r.dir = dir;
        r.key = key;
        r.pending |= NAME_DIR;
    }
}

/// The end of a program that may have asked for a name: the tail call to the naming program
/// (which does not return) when it did.
#[inline(always)]
fn finish<C: EbpfContext>(ctx: &C) {
    let Some(r) = OBSERVER_NAME_REQUEST.get_ptr(0) else {
        return;
    };
    // SAFETY: this CPU's slot (see `name_dir`).
    if unsafe { (*r).pending } != 0 {
        // SAFETY: `ctx` is this program's own context.
        unsafe { OBSERVER_TAIL.tail_call(ctx, 0) };
    }
}

/// The naming program's body: the current process's name (`OBSERVER_PROC_NAMES`) and a
/// `HOOK_DIR_NAME` record with the requested directory's key and path, first used by it.
#[inline(always)]
pub fn name_requested() -> Option<()> {
    let r = OBSERVER_NAME_REQUEST.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot, set by the program that tail-called this one.
    let req = unsafe { &mut *r };
    let pending = req.pending;
    req.pending = 0;
    if pending & NAME_PROC != 0 {
        remember_proc((aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32);
    }
    if pending & NAME_DIR == 0 {
        return None;
    }
    let (buf, ev, area) = record(req.id, 0, 0)?;
    ev.hook = HOOK_DIR_NAME;
    ev.ino = req.key.ino;
    ev.dev = req.key.dev;
    walk(area, req.mnt, req.dir, &mut ev.path);
    send(buf, ev)
}

/// The flags argument of an open-family call (`creat` implies them).
#[inline(always)]
fn open_flags(id: u32, regs: u64) -> u32 {
    match id {
        SYS_OPEN => arg(regs, 1) as u32,
        SYS_OPENAT => arg(regs, 2) as u32,
        SYS_CREAT => O_CREAT | O_WRONLY | O_TRUNC,
        // openat2(dirfd, path, struct open_how *how, size): how->flags is the first u64.
        SYS_OPENAT2 => {
            unsafe { bpf_probe_read_user(arg(regs, 2) as *const u64) }.unwrap_or(0) as u32
        }
        _ => 0,
    }
}

const NAME_MASK: usize = LOCK_NAME_READ_MAX - 1;
const _: () = assert!(LOCK_NAME_READ_MAX.is_power_of_two());
const _: () = assert!(PATH_COMPONENT_AREA + LOCK_NAME_READ_MAX <= PATH_BUF_SIZE);

/// Whether a successful create took a lock: mkdir, link, or an `O_CREAT|O_EXCL` open of a name
/// ending in a lock suffix (`LOCK_NAME_SUFFIXES`). The name is read into the scratch record's
/// tail area (the record, if one follows, is built afterwards).
#[inline(always)]
fn lock_acquired(id: u32, spec: SyscallSpec) -> bool {
    let acquiring = matches!(
        id,
        SYS_MKDIR | SYS_MKDIRAT | SYS_LINK | SYS_LINKAT | SYS_OPEN | SYS_OPENAT | SYS_OPENAT2
    );
    if !acquiring || spec.path_arg < 0 {
        return false;
    }
    let regs = user_regs(unsafe { bpf_get_current_task() });
    if is_open_family(id) && open_flags(id, regs) & (O_CREAT | O_EXCL) != O_CREAT | O_EXCL {
        return false;
    }
    let Some(buf) = OBSERVER_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU scratch, ours while this program runs; the read stays inside `path`.
    let area: *mut u8 = unsafe { (*buf).path.as_mut_ptr().add(PATH_COMPONENT_AREA) };
    let n = unsafe {
        bpf_probe_read_user_str(
            area.cast(),
            LOCK_NAME_READ_MAX as u32,
            arg(regs, spec.path_arg) as *const _,
        )
    };
    // Empty, or longer than the read (its ending unseen): not recognised.
    if n <= 1 || n as usize >= LOCK_NAME_READ_MAX {
        return false;
    }
    let mut end = (n - 1) as usize & NAME_MASK;
    if end > 1 && name_byte(area, end - 1) == b'/' {
        end -= 1;
    }
    ends_with(area, end, LOCK_SUFFIX_LOCK)
        || ends_with(area, end, LOCK_SUFFIX_LCK)
        || ends_with(area, end, LOCK_SUFFIX_UPPER)
}

#[inline(always)]
fn name_byte(area: *mut u8, i: usize) -> u8 {
    // SAFETY: masked into the LOCK_NAME_READ_MAX bytes read above.
    unsafe { *area.add(i & NAME_MASK) }
}

#[inline(always)]
fn ends_with<const K: usize>(area: *mut u8, end: usize, suffix: [u8; K]) -> bool {
    if end < K {
        return false;
    }
    let mut i = 0;
    while i < K {
        if name_byte(area, end - K + i) != suffix[i] {
            return false;
        }
        i += 1;
    }
    true
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

/// A successful utimes-family call. Without a device filter (which needs the filesystem, so the
/// path's base) and in tracepoint mode, whether it is a refresh worth a record is decided
/// before any path work: restored times and repeats cost a counter.
#[inline(always)]
fn heartbeat_success(id: u32, spec: SyscallSpec, ret: i64) -> Option<()> {
    let cfg = runtime()?;
    if refresh::decided_first(cfg) {
        admitted(cfg)?;
        let regs = user_regs(unsafe { bpf_get_current_task() });
        if !refresh::syscall_sends(id, spec, cfg, regs) {
            bump(COUNTER_HEARTBEAT_OK);
            return None;
        }
    }
    slow_path(id, spec, cfg, ret, 0, false, false)
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
        let add = |c: &mut EntryCounts| {
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
        let key = DirKey { dev, _pad0: 0, ino };
        if add_entries::<true>(tgid, key, add) && features() & FEATURE_GROWTH != 0 {
            name_dir(id, base.path.0, base.path.1, key);
        }
    } else if spec.class == CLASS_HEARTBEAT {
        bump(if errno == 0 {
            COUNTER_HEARTBEAT_OK
        } else {
            COUNTER_HEARTBEAT_FAILED
        });
        // A success is sent only as a refresh (see `heartbeat_success`); a failure always is.
        if errno == 0
            && !refresh::decided_first(cfg)
            && !refresh::syscall_sends(id, spec, cfg, regs)
        {
            return None;
        }
    }
    if errno != 0 && (masked || spec.class != CLASS_ERROR) {
        count_error(id, errno, dev);
    }
    if !created && !wants_record(cfg, spec.class, masked) {
        return None;
    }

    let (buf, ev, area) = record(id, errno, ret)?;
    ev.fd = fd;
    ev.flags = open_flags(id, regs);
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
