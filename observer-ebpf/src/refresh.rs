//! Which successful utimes-family calls are refreshes worth a record. A heartbeat sets the mtime
//! to now; tar, `cp -a` and `rsync -a` restore old times, once per file (counted, never sent).
//! A process refreshing one name again and again (a `touch` loop) sends one record per
//! `REFRESH_COALESCE_NS` on each CPU; the rest are counted. Failures never come here: they are
//! always sent.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::bpf_probe_read_user_str,
    },
    macros::map,
    maps::PerCpuArray,
};
use observer_common::{
    config::{
        CONFIG_FEXIT_ACTIVE, CONFIG_FILTER_DEVS, COUNTER_REFRESH_COALESCED, COUNTER_TIMES_SET,
        REFRESH_COALESCE_NS, REFRESH_NAME_MAX, REFRESH_WINDOW_NS, RuntimeConfig,
    },
    event::{PATH_BUF_SIZE, PATH_COMPONENT_AREA, SYSCALL_EVENT_PATH_OFFSET},
    syscall::*,
};

use crate::{
    args::{AT_FDCWD, arg},
    maps::{OBSERVER_SCRATCH, bump},
};

const UTIME_NOW: i64 = (1 << 30) - 1;
const UTIME_OMIT: i64 = (1 << 30) - 2;
const NS: i64 = 1_000_000_000;
const WORDS: usize = REFRESH_NAME_MAX / 8;
const _: () = assert!(REFRESH_NAME_MAX.is_multiple_of(8));
const _: () = assert!(PATH_COMPONENT_AREA + REFRESH_NAME_MAX <= PATH_BUF_SIZE);
const _: () = assert!((SYSCALL_EVENT_PATH_OFFSET + PATH_COMPONENT_AREA).is_multiple_of(8));

/// The last refresh this CPU sent: who, from where (dirfd, or the file's filesystem for
/// `vfs_utimes`), which name (or inode), when.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RefreshSlot {
    tgid: u32,
    base: u32,
    key: u64,
    at_ns: u64,
}

#[map]
static OBSERVER_REFRESH_SENT: PerCpuArray<RefreshSlot> = PerCpuArray::with_max_entries(1, 0);

/// Whether a successful call is judged before its path is resolved (`heartbeat_success`): in
/// tracepoint mode without a device filter. Otherwise after the filters, in the slow path.
#[inline(always)]
pub fn decided_first(cfg: &RuntimeConfig) -> bool {
    cfg.flags & (CONFIG_FEXIT_ACTIVE | CONFIG_FILTER_DEVS) == 0
}

/// A successful syscall of the utimes family (`regs`: its saved user registers): whether it is
/// sent as a refresh. When not, it has been counted here. The coalescing key is the dirfd
/// argument and the name as passed, so no path is resolved for it.
#[inline(always)]
pub fn syscall_sends(id: u32, spec: SyscallSpec, cfg: &RuntimeConfig, regs: u64) -> bool {
    let times = match id {
        SYS_UTIMENSAT | SYS_FUTIMESAT => arg(regs, 2),
        _ => arg(regs, 1),
    };
    if !sets_now(id, times, cfg) {
        bump(COUNTER_TIMES_SET);
        return false;
    }
    let name = if spec.path_arg >= 0 {
        arg(regs, spec.path_arg)
    } else {
        0
    };
    let dirfd = if spec.dirfd_arg >= 0 {
        arg(regs, spec.dirfd_arg) as u32
    } else {
        AT_FDCWD as u32
    };
    // A name too long to hash whole is always sent (two such names could differ past the end).
    let Some(h) = name_hash(name) else {
        return true;
    };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    !coalesced(tgid, dirfd, h)
}

/// The same for `vfs_utimes` (fexit), which knows the file itself.
#[inline(always)]
pub fn vfs_sends(cfg: &RuntimeConfig, times: u64, tgid: u32, dev: u32, ino: u64) -> bool {
    if !sets_now(SYS_VFS_UTIMES, times, cfg) {
        bump(COUNTER_TIMES_SET);
        return false;
    }
    !coalesced(tgid, dev, ino)
}

/// Whether the call set the mtime to now (`times` NULL, `UTIME_NOW`, or explicit times within
/// `REFRESH_WINDOW_NS` of the clock) rather than restoring explicit times.
#[inline(always)]
fn sets_now(id: u32, times: u64, cfg: &RuntimeConfig) -> bool {
    if times == 0 || cfg.realtime_offset_ns == 0 {
        return true;
    }
    // The new mtime as (seconds, nanoseconds); an unreadable argument counts as now (sent).
    let (sec, nsec) = match id {
        // struct timespec[2] (user) / struct timespec64[2] (kernel): {sec, nsec} each.
        SYS_UTIMENSAT | SYS_VFS_UTIMES => {
            let t = if id == SYS_UTIMENSAT {
                unsafe { bpf_probe_read_user(times as *const [i64; 4]) }
            } else {
                unsafe { bpf_probe_read_kernel(times as *const [i64; 4]) }
            };
            let Ok(t) = t else { return true };
            match t[3] {
                UTIME_NOW => return true,
                UTIME_OMIT => return false, // the mtime is left as it is
                n => (t[2], n),
            }
        }
        // struct timeval[2]: {sec, usec} each.
        SYS_UTIMES | SYS_FUTIMESAT => {
            let Ok(t) = (unsafe { bpf_probe_read_user(times as *const [i64; 4]) }) else {
                return true;
            };
            (t[2], t[3].wrapping_mul(1000))
        }
        // struct utimbuf: {actime, modtime}, seconds.
        SYS_UTIME => {
            let Ok(t) = (unsafe { bpf_probe_read_user(times as *const [i64; 2]) }) else {
                return true;
            };
            (t[1], 0)
        }
        _ => return true,
    };
    // Seconds outside 1970..2242 cannot be now (and would overflow in ns).
    if !(0..(1 << 33)).contains(&sec) {
        return false;
    }
    let now = unsafe { bpf_ktime_get_ns() }.wrapping_add(cfg.realtime_offset_ns) as i64;
    (sec * NS + nsec).wrapping_sub(now).unsigned_abs() <= REFRESH_WINDOW_NS
}

/// A hash of the user string at `name` and its length (0 for no name); `None` when it is
/// unreadable or `REFRESH_NAME_MAX` bytes or longer. Read into the scratch record's tail area
/// (a record, if one follows, is built afterwards).
#[inline(always)]
fn name_hash(name: u64) -> Option<u64> {
    if name == 0 {
        return Some(0);
    }
    let buf = OBSERVER_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, ours while this program runs; the read stays inside `path`.
    let area: *mut u8 = unsafe { (*buf).path.as_mut_ptr().add(PATH_COMPONENT_AREA) };
    let n =
        unsafe { bpf_probe_read_user_str(area.cast(), REFRESH_NAME_MAX as u32, name as *const _) };
    if n <= 0 || n as usize >= REFRESH_NAME_MAX {
        return None;
    }
    let n = n as usize;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ n as u64;
    let mut i = 0;
    while i < WORDS {
        if i * 8 >= n {
            break;
        }
        // SAFETY: inside the bytes read above; 8-aligned (asserted at the top).
        let mut w = unsafe { *(area.add(i * 8) as *const u64) };
        let rem = n - i * 8;
        if rem < 8 {
            // Bytes after the terminating NUL are whatever the scratch held before.
            w &= (1u64 << (rem * 8)) - 1;
        }
        h = (h ^ w).wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    Some(h)
}

/// Whether this refresh repeats the one this CPU sent less than `REFRESH_COALESCE_NS` ago (same
/// process, base and name key): counted, not sent. Otherwise it becomes the one sent.
#[inline(always)]
fn coalesced(tgid: u32, base: u32, key: u64) -> bool {
    let Some(p) = OBSERVER_REFRESH_SENT.get_ptr_mut(0) else {
        return false;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: this CPU's slot, exclusively ours while this program runs.
    let s = unsafe { &mut *p };
    if s.tgid == tgid
        && s.base == base
        && s.key == key
        && now.wrapping_sub(s.at_ns) < REFRESH_COALESCE_NS
    {
        bump(COUNTER_REFRESH_COALESCED);
        return true;
    }
    *s = RefreshSlot {
        tgid,
        base,
        key,
        at_ns: now,
    };
    false
}
