//! Maps shared by every program. Sizes are defaults; the daemon overrides some at load time.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::map,
    maps::{Array, HashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf},
};
use observer_common::{
    config::{
        CONFIG_EXCLUDE_CGROUPS, CONFIG_EXCLUDE_COMMS, COUNTER_ERROR_KEYS_FULL, COUNTER_FILTERED,
        COUNTER_SLOTS, DELETE_DIRS_MAX, DELETE_MOUNTS_MAX, DELETE_PROCS_MAX, DeletePending, DirKey,
        ERROR_KEYS_MAX, EntryCounts, ErrorKey, FILTER_ENTRIES_MAX, KILLED_MAX, PENDING_DIR,
        PENDING_MOUNT, PENDING_PROC, ProcName, RuntimeConfig,
    },
    event::SyscallEventBuf,
};

/// Detail records for userspace (variable length, each starting with an `EventHeader`).
/// Load-time features (`FEATURE_*`), written by the daemon before load.
#[unsafe(no_mangle)]
pub static OBSERVER_FEATURES: u32 = 0;

/// The load-time features (a volatile read: the loader rewrites the value, and the verifier,
/// seeing it constant, drops the code of features that are off).
#[inline(always)]
pub fn features() -> u32 {
    // SAFETY: a read of a global the loader set before load.
    unsafe { core::ptr::read_volatile(&raw const OBSERVER_FEATURES) }
}

#[map]
pub static OBSERVER_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Slot 0: the naming program (`fso_name_dir`), tail-called at the end of a `sys_exit` program
/// that keyed a directory new to the entry counters. Verified once on its own, the path walk
/// is not verified again inside every creating and deleting program.
#[map]
pub static OBSERVER_TAIL: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Names to record, set by the counting and taken by the naming program (per CPU: the tail call
/// runs on the same CPU, right after): a directory (`NAME_DIR`: `id`, `mnt`, `dir`, `key`) and
/// the current process (`NAME_PROC`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NameRequest {
    pub id: u32,
    pub pending: u32,
    pub mnt: u64,
    pub dir: u64,
    pub key: DirKey,
}

pub const NAME_DIR: u32 = 1;
pub const NAME_PROC: u32 = 2;

#[map]
pub static OBSERVER_NAME_REQUEST: PerCpuArray<NameRequest> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch where a record is assembled (too large for the 512-byte BPF stack).
#[map]
pub static OBSERVER_SCRATCH: PerCpuArray<SyscallEventBuf> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU counters (`COUNTER_*` slots): ring drops, events, incomplete paths, heartbeats.
#[map]
pub static OBSERVER_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Exact failure counts per (syscall, errno), kept even when the detail record is dropped.
#[map]
pub static OBSERVER_ERRORS: PerCpuHashMap<ErrorKey, u64> =
    PerCpuHashMap::with_max_entries(ERROR_KEYS_MAX, 0);

/// Deletion counters per process (tgid), per resolution directory and per filesystem.
#[map]
pub static OBSERVER_DELETES_BY_PROC: LruPerCpuHashMap<u32, EntryCounts> =
    LruPerCpuHashMap::with_max_entries(DELETE_PROCS_MAX, 0);
#[map]
pub static OBSERVER_DELETES_BY_DIR: LruPerCpuHashMap<DirKey, EntryCounts> =
    LruPerCpuHashMap::with_max_entries(DELETE_DIRS_MAX, 0);
#[map]
pub static OBSERVER_DELETES_BY_MOUNT: LruPerCpuHashMap<u32, EntryCounts> =
    LruPerCpuHashMap::with_max_entries(DELETE_MOUNTS_MAX, 0);

/// Counted processes killed by a signal: tgid -> signal (from `sched_process_exit`).
#[map]
pub static OBSERVER_KILLED: aya_ebpf::maps::LruHashMap<u32, u32> =
    aya_ebpf::maps::LruHashMap::with_max_entries(KILLED_MAX, 0);

/// Who each counted process is (comm, cgroup), from its first count (see `ProcName`).
#[map]
pub static OBSERVER_PROC_NAMES: aya_ebpf::maps::LruHashMap<u32, ProcName> =
    aya_ebpf::maps::LruHashMap::with_max_entries(DELETE_PROCS_MAX, 0);

/// x86-64 syscall number -> syscall id, for fexit programs (which run inside some syscall).
#[map]
pub static OBSERVER_NR_TO_ID: Array<u32> =
    Array::with_max_entries(observer_common::syscall::NR_TABLE_SIZE, 0);

/// Thread id -> syscall id an fexit program already reported for the syscall in progress; the
/// `sys_exit` program of that syscall consumes it instead of reporting the call again.
#[map]
pub static OBSERVER_SEEN: aya_ebpf::maps::LruHashMap<u32, u32> =
    aya_ebpf::maps::LruHashMap::with_max_entries(16384, 0);

/// Files whose writes are lock heartbeats, by (dev, inode).
#[map]
pub static OBSERVER_HEARTBEAT_FILES: HashMap<DirKey, u8> =
    HashMap::with_max_entries(observer_common::config::HEARTBEAT_FILES_MAX, 0);

/// Slot 0: the runtime filter, written by the daemon.
#[map]
pub static OBSERVER_CONFIG: Array<RuntimeConfig> = Array::with_max_entries(1, 0);

/// Filters, consulted only when the matching `CONFIG_*` flag is set.
#[map]
pub static OBSERVER_WATCH_DEVS: HashMap<u32, u8> = HashMap::with_max_entries(FILTER_ENTRIES_MAX, 0);
#[map]
pub static OBSERVER_EXCLUDE_COMMS: HashMap<[u8; 16], u8> =
    HashMap::with_max_entries(FILTER_ENTRIES_MAX, 0);
#[map]
pub static OBSERVER_EXCLUDE_CGROUPS: HashMap<u64, u8> =
    HashMap::with_max_entries(FILTER_ENTRIES_MAX, 0);

#[inline(always)]
pub fn bump(slot: u32) {
    if let Some(p) = OBSERVER_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot; these programs do not nest on one CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn runtime() -> Option<&'static RuntimeConfig> {
    OBSERVER_CONFIG.get(0)
}

#[inline(always)]
pub fn count_error(syscall: u32, errno: u32, dev: u32) {
    let key = ErrorKey {
        syscall,
        errno,
        dev,
        _pad0: 0,
    };
    if let Some(p) = OBSERVER_ERRORS.get_ptr_mut(key) {
        unsafe { *p += 1 };
        return;
    }
    if OBSERVER_ERRORS.insert(key, 1, 1 /* BPF_NOEXIST */).is_ok() {
        return;
    }
    // Another CPU may have created the key meanwhile (per-CPU values: ours is still 0).
    match OBSERVER_ERRORS.get_ptr_mut(key) {
        Some(p) => unsafe { *p += 1 },
        None => bump(COUNTER_ERROR_KEYS_FULL),
    }
}

/// Per-CPU coalescing slot in front of the three deletion maps (see `DeletePending`).
#[map]
pub static OBSERVER_DELETES_PENDING: PerCpuArray<DeletePending> =
    PerCpuArray::with_max_entries(1, 0);

/// Counts one call that removed or created an entry (`f` adds it) for its process, the
/// directory it keys and that directory's filesystem. Repeats of the same keys on this CPU
/// (`rm -rf`, `tar x`) add to the pending slot alone; a key's counts move into its map when the
/// key changes. Returns whether the directory is new to the counters (neither this CPU's
/// pending key nor in the map): the caller then names it (`HOOK_DIR_NAME`).
///
/// `DEFER`: the process's name is asked of the naming program (a tracepoint program that ends
/// with the tail call) instead of recorded here; a conditional map update before the record's
/// path walk doubles what the verifier explores after it.
#[inline(always)]
pub fn add_entries<const DEFER: bool>(
    tgid: u32,
    dir: DirKey,
    f: impl Fn(&mut EntryCounts),
) -> bool {
    // Naming (processes, directories) is growth's: without it the verifier drops that code.
    let growth = features() & observer_common::config::FEATURE_GROWTH != 0;
    let Some(p) = OBSERVER_DELETES_PENDING.get_ptr_mut(0) else {
        add_deletes(&OBSERVER_DELETES_BY_PROC, &tgid, &f);
        let new = growth && unsafe { OBSERVER_DELETES_BY_DIR.get(dir) }.is_none();
        add_deletes(&OBSERVER_DELETES_BY_DIR, &dir, &f);
        add_deletes(&OBSERVER_DELETES_BY_MOUNT, &dir.dev, &f);
        return new;
    };
    // SAFETY: this CPU's slot, exclusively ours while this program runs.
    let p = unsafe { &mut *p };
    if growth && (p.used & PENDING_PROC == 0 || p.tgid != tgid) {
        // Once per change of process on this CPU: name it while it runs.
        if DEFER {
            request_names(NAME_PROC);
        } else {
            remember_proc(tgid);
        }
    }
    let same_dir = p.used & PENDING_DIR != 0 && p.dir.dev == dir.dev && p.dir.ino == dir.ino;
    let proc_moves = p.used & PENDING_PROC != 0 && p.tgid != tgid;
    let dir_moves = p.used & PENDING_DIR != 0 && !same_dir;
    let mount_moves = p.used & PENDING_MOUNT != 0 && p.mount != dir.dev;
    // Looked up once per change of directory on this CPU, not per call.
    let new = growth && !same_dir && unsafe { OBSERVER_DELETES_BY_DIR.get(dir) }.is_none();
    if proc_moves || dir_moves || mount_moves {
        p.seq += 1; // odd: counts are on their way into the maps
        if proc_moves {
            let c = p.by_proc;
            add_deletes(&OBSERVER_DELETES_BY_PROC, &p.tgid, |d| d.add(&c));
            p.by_proc = EntryCounts::default();
        }
        if dir_moves {
            let c = p.by_dir;
            add_deletes(&OBSERVER_DELETES_BY_DIR, &p.dir, |d| d.add(&c));
            p.by_dir = EntryCounts::default();
        }
        if mount_moves {
            let c = p.by_mount;
            add_deletes(&OBSERVER_DELETES_BY_MOUNT, &p.mount, |d| d.add(&c));
            p.by_mount = EntryCounts::default();
        }
        p.seq += 1;
    }
    p.tgid = tgid;
    p.dir = dir;
    p.mount = dir.dev;
    p.used = PENDING_PROC | PENDING_DIR | PENDING_MOUNT;
    f(&mut p.by_proc);
    f(&mut p.by_dir);
    f(&mut p.by_mount);
    new
}

/// At `sched_process_exit`: the exiting thread group's leader, when its exit code says a signal
/// ended it and the entry counters know the process.
#[inline(always)]
pub fn note_killed() -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid != pid_tgid as u32 {
        return None; // a thread, not the leader
    }
    unsafe { OBSERVER_PROC_NAMES.get(tgid) }?;
    let task = unsafe { aya_ebpf::helpers::generated::bpf_get_current_task() };
    let code = crate::kread::u32_at(task, crate::kread::off!(task_exit_code))?;
    let signal = code & 0x7f;
    if signal == 0 {
        return None;
    }
    OBSERVER_KILLED.insert(tgid, signal, 0).ok()
}

/// Adds `what` (`NAME_*`) to this CPU's naming request.
#[inline(always)]
pub fn request_names(what: u32) {
    if let Some(r) = OBSERVER_NAME_REQUEST.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, exclusively ours while this program (and its tail) runs.
        unsafe { (*r).pending |= what };
    }
}

/// Records who `tgid` (the current process) is, unless known.
#[inline(always)]
pub fn remember_proc(tgid: u32) {
    if unsafe { OBSERVER_PROC_NAMES.get(tgid) }.is_some() {
        return;
    }
    let name = ProcName {
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
    };
    let _: Result<(), _> = OBSERVER_PROC_NAMES.insert(tgid, name, 0);
}

/// Adds to the deletion counters of `key` in `map` (creating the key on first use).
#[inline(always)]
pub fn add_deletes<K>(
    map: &LruPerCpuHashMap<K, EntryCounts>,
    key: &K,
    f: impl Fn(&mut EntryCounts),
) {
    if let Some(p) = map.get_ptr_mut(key) {
        unsafe { f(&mut *p) };
        return;
    }
    let mut fresh = EntryCounts::default();
    f(&mut fresh);
    // A per-CPU map: an update from a program writes this CPU's value only, so another CPU
    // that made the key meanwhile loses nothing (and no second branch burdens the verifier).
    let _: Result<(), _> = map.insert(key, fresh, 0 /* BPF_ANY */);
}

/// The calling task's `pid_tgid`, unless it must not be observed: the observer itself (its own
/// failing writes must not feed back), or a task excluded by comm or cgroup (counted as
/// filtered). Every program asks this once, before it counts or reports anything.
#[inline(always)]
pub fn admitted(cfg: &RuntimeConfig) -> Option<u64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == cfg.self_tgid {
        return None;
    }
    if task_excluded(cfg) {
        bump(COUNTER_FILTERED);
        return None;
    }
    Some(pid_tgid)
}

/// Whether the current task is excluded by comm or cgroup. The comm and cgroup are fetched
/// only when such an exclusion is configured (a successful deletion needs neither otherwise).
#[inline(always)]
fn task_excluded(cfg: &RuntimeConfig) -> bool {
    (cfg.flags & CONFIG_EXCLUDE_COMMS != 0
        && unsafe { OBSERVER_EXCLUDE_COMMS.get(bpf_get_current_comm().unwrap_or([0; 16])) }
            .is_some())
        || (cfg.flags & CONFIG_EXCLUDE_CGROUPS != 0
            && unsafe { OBSERVER_EXCLUDE_CGROUPS.get(bpf_get_current_cgroup_id()) }.is_some())
}

/// Whether `dev` passes the watched-devices filter.
#[inline(always)]
pub fn dev_watched(cfg: &RuntimeConfig, dev: u32) -> bool {
    // dev 0: an absolute name, whose filesystem is not resolved here; userspace filters it by
    // the mount its path lies under.
    dev == 0
        || cfg.flags & observer_common::config::CONFIG_FILTER_DEVS == 0
        || unsafe { OBSERVER_WATCH_DEVS.get(dev) }.is_some()
}
