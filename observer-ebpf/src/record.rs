//! The detail record: the per-CPU scratch record filled in and sent through the ring, and the
//! deletion counters.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_uid_gid, bpf_ktime_get_ns, generated::bpf_get_current_task,
};
use observer_common::{
    config::{COUNTER_EVENTS, COUNTER_PATH_INCOMPLETE, COUNTER_RING_DROPS, DirKey, EntryCounts},
    event::{
        EVENT_SYSCALL, EventHeader, HOOK_TRACEPOINT, PATH_BUF_SIZE, PATH_INCOMPLETE, PathInfo,
        SYSCALL_EVENT_PATH_OFFSET, SyscallEvent,
    },
};

use crate::{
    kread::{off, ptr_at, u32_at},
    maps::*,
};

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
            mnt_ns: 0,
            _pad: 0,
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

/// Inode number of the current task's mount namespace (0 when unreadable): read only for
/// records that are sent, so counted-only calls do not pay for it.
#[inline(always)]
fn current_mnt_ns() -> u32 {
    // SAFETY: the helper returns the current task; every read below is a probe read.
    let task = unsafe { bpf_get_current_task() };
    ptr_at(task, off!(task_nsproxy))
        .and_then(|ns| ptr_at(ns, off!(nsproxy_mnt_ns)))
        .and_then(|mnt| u32_at(mnt, off!(mnt_ns_inum)))
        .unwrap_or(0)
}

/// Updates the deletion counters of one call.
#[inline(always)]
pub fn count_delete(tgid: u32, dir: DirKey, errno: u32, removedir: bool, rename: bool, over: bool) {
    let add = |c: &mut EntryCounts| {
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
    // fexit programs cannot tail-call the (tracepoint) naming program: they name the process here.
    let _new: bool = add_entries::<false>(tgid, dir, add);
}

/// Sends the record in the scratch buffer at `buf` (whose event is `ev`).
#[inline(always)]
pub fn send(buf: *mut u8, ev: &mut SyscallEvent) -> Option<()> {
    if ev.path.flags & PATH_INCOMPLETE != 0 {
        bump(COUNTER_PATH_INCOMPLETE);
    }
    ev.header.mnt_ns = current_mnt_ns();
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
