//! Settings the daemon hands to the kernel programs at run time (map `OBSERVER_CONFIG`) and the
//! keys of the in-kernel counters.

/// Runtime filter, slot 0 of the `OBSERVER_CONFIG` array map. Updating it changes what the
/// programs report without reloading them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RuntimeConfig {
    /// Bit `n` set: errno `n` (0..=63) is reported.
    pub errno_mask_lo: u64,
    /// Bit `n` set: errno `64 + n` (64..=127) is reported.
    pub errno_mask_hi: u64,
    /// `CONFIG_*` flags.
    pub flags: u32,
    /// Detail records for successful deletions: 0 = none, N = one in N (per CPU). Counts are
    /// always exact.
    pub delete_sample: u32,
    /// The daemon's own tgid: never observed (its own failed writes must not feed back).
    pub self_tgid: u32,
    /// Detail records for successful creates (mkdir, mknod, link, symlink, and opens with
    /// O_CREAT plus O_EXCL or O_TRUNC): 0 = none, N = one in N. Needs `FEATURE_CREATES`.
    pub create_sample: u32,
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC` in ns, kept current by the daemon: the programs tell
    /// a refresh (times set to now) from times being restored (tar, `cp -a`). 0 = unknown:
    /// every successful utimes-family call is then a refresh.
    pub realtime_offset_ns: u64,
}

/// A utimes-family call whose new mtime is within this of now is a refresh (a heartbeat);
/// further away, times are being restored (tar, `cp -a`, `rsync -a`): counted, not sent.
/// Wide enough for second-resolution calls (`utime`) and a process's own clock reading.
pub const REFRESH_WINDOW_NS: u64 = 2_000_000_000;
/// Refreshes of the same name by the same process on one CPU closer together than this are
/// counted, and only the first is sent (a lock heartbeat is far slower; a `touch` loop is not).
pub const REFRESH_COALESCE_NS: u64 = 50_000_000;
/// Names up to this long (with the NUL) are hashed for coalescing; longer ones are always sent.
pub const REFRESH_NAME_MAX: usize = 128;

/// Only events/counters on filesystems listed in `OBSERVER_WATCH_DEVS`.
pub const CONFIG_FILTER_DEVS: u32 = 1 << 0;
/// Ignore tasks whose comm is in `OBSERVER_EXCLUDE_COMMS`.
pub const CONFIG_EXCLUDE_COMMS: u32 = 1 << 1;
/// Ignore tasks whose cgroup id is in `OBSERVER_EXCLUDE_CGROUPS`.
pub const CONFIG_EXCLUDE_CGROUPS: u32 = 1 << 2;

/// fexit programs are attached: `sys_exit` programs of the syscalls they cover skip calls an
/// fexit program already reported (`OBSERVER_SEEN`).
pub const CONFIG_FEXIT_ACTIVE: u32 = 1 << 3;

/// Load-time feature bits (read-only global `OBSERVER_FEATURES`; the verifier drops disabled
/// code, so a feature that is off costs nothing on the hot path).
/// Writes to files in `OBSERVER_HEARTBEAT_FILES` are reported as heartbeats.
pub const FEATURE_HEARTBEAT_WRITES: u32 = 1 << 0;
/// Successful creates are sampled (`RuntimeConfig::create_sample`) for the leak detector.
pub const FEATURE_CREATES: u32 = 1 << 1;
/// Successful acquisitions of lock-named paths (mkdir, `O_CREAT|O_EXCL` open, link whose new
/// name ends in one of [`LOCK_NAME_SUFFIXES`]) are always reported (`locks.conventions`).
pub const FEATURE_LOCK_ACQUIRE: u32 = 1 << 2;
/// Successful creates are counted exactly per process, directory and filesystem (in
/// [`EntryCounts`], beside the deletions), and a directory the counters key for the first time
/// is named by a [`crate::event::HOOK_DIR_NAME`] record (`growth.enabled`).
pub const FEATURE_GROWTH: u32 = 1 << 3;
/// `FMODE_CREATED` in `struct file.f_mode`: the open created its file (4.19 and later; the
/// same bit through 6.18).
pub const FMODE_CREATED: u32 = 0x10_0000;
/// Name endings the kernel treats as a lock being acquired (a trailing `/` is ignored). The
/// daemon's lock-name conventions include them.
pub const LOCK_NAME_SUFFIXES: &[&[u8]] = &[&LOCK_SUFFIX_LOCK, &LOCK_SUFFIX_LCK, &LOCK_SUFFIX_UPPER];
pub const LOCK_SUFFIX_LOCK: [u8; 5] = *b".lock";
pub const LOCK_SUFFIX_LCK: [u8; 4] = *b".lck";
pub const LOCK_SUFFIX_UPPER: [u8; 4] = *b"LOCK";
/// Longest user path (bytes, with its NUL) whose ending the kernel checks; longer names are not
/// recognised as acquisitions (they are still locks from their first refresh).
pub const LOCK_NAME_READ_MAX: usize = 512;
/// Capacity of `OBSERVER_HEARTBEAT_FILES` ((dev, ino) keys as [`DirKey`]).
pub const HEARTBEAT_FILES_MAX: u32 = 1024;

/// Capacity of the filter maps.
pub const FILTER_ENTRIES_MAX: u32 = 256;

/// Entry counters (per process, per directory, per mount): what was removed and what was
/// created there. Per-CPU values; sum them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EntryCounts {
    /// Successful unlink of a non-directory.
    pub files: u64,
    /// Successful rmdir / unlinkat(AT_REMOVEDIR).
    pub dirs: u64,
    /// Successful renames.
    pub renames: u64,
    /// Successful renames that replaced an existing entry (a deletion; fexit mode only).
    pub renames_over: u64,
    /// Failed deletion calls (any errno).
    pub failed: u64,
    /// Entries created other than directories: files (an open that created its file, `creat`,
    /// `mknod`), hard links and symlinks. Counted with `FEATURE_GROWTH`.
    pub created: u64,
    /// Directories created (`mkdir`, `mkdirat`). Counted with `FEATURE_GROWTH`.
    pub mkdirs: u64,
}

impl EntryCounts {
    /// Adds `o` (another CPU's, key's or slot's counts) to these.
    #[inline(always)]
    pub fn add(&mut self, o: &EntryCounts) {
        // Every field named: a counter added to the struct cannot be forgotten here.
        let EntryCounts {
            files,
            dirs,
            renames,
            renames_over,
            failed,
            created,
            mkdirs,
        } = *o;
        self.files += files;
        self.dirs += dirs;
        self.renames += renames;
        self.renames_over += renames_over;
        self.failed += failed;
        self.created += created;
        self.mkdirs += mkdirs;
    }
}

/// Key of the per-directory deletion counters: the directory the name was resolved against
/// (the dirfd or the cwd; for names with `/` in them, an ancestor of the real parent).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DirKey {
    pub dev: u32,
    pub _pad0: u32,
    pub ino: u64,
}

/// Per-CPU coalescing slot in front of the three deletion maps (`OBSERVER_DELETES_PENDING`):
/// consecutive deletions by the same process, in the same directory, on the same filesystem
/// (`rm -rf`) add here, and a slot's counts move into its LRU map only when its key changes —
/// one array access per deletion instead of three hash updates. A reader adds a CPU's slot to
/// what it read from the maps when `seq` was even and unchanged around the map reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DeletePending {
    /// Bumped before and after every move into the maps (odd while one is under way).
    pub seq: u64,
    pub dir: DirKey,
    pub tgid: u32,
    pub mount: u32,
    /// `PENDING_*` bits: which slots hold a key.
    pub used: u32,
    pub _pad0: u32,
    pub by_proc: EntryCounts,
    pub by_dir: EntryCounts,
    pub by_mount: EntryCounts,
}

/// Who a process of the entry counters is, written when the counters first see it (while it
/// runs): its comm and cgroup, so a process that exits at once (`mkdir`, `touch`, `cp`) is
/// still named and placed in its workload (`OBSERVER_PROC_NAMES`, LRU, one per counted tgid).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ProcName {
    pub comm: [u8; 16],
    pub cgroup_id: u64,
}

pub const PENDING_PROC: u32 = 1;
pub const PENDING_DIR: u32 = 2;
pub const PENDING_MOUNT: u32 = 4;

/// Capacities of the deletion counter maps (LRU: the least recently updated key is evicted).
pub const DELETE_PROCS_MAX: u32 = 4096;
pub const DELETE_DIRS_MAX: u32 = 16384;
pub const DELETE_MOUNTS_MAX: u32 = 1024;
/// Capacity of the killed-process map (LRU).
pub const KILLED_MAX: u32 = 4096;

/// Largest errno the mask can name.
pub const ERRNO_MASK_MAX: u32 = 127;

impl RuntimeConfig {
    /// Adds `errno` to the mask; returns false when it is outside `1..=ERRNO_MASK_MAX`.
    pub fn watch_errno(&mut self, errno: u32) -> bool {
        match errno {
            1..=63 => self.errno_mask_lo |= 1 << errno,
            64..=ERRNO_MASK_MAX => self.errno_mask_hi |= 1 << (errno - 64),
            _ => return false,
        }
        true
    }

    /// Whether `errno` is in the mask (the same test the kernel programs make).
    #[inline(always)]
    pub fn watches_errno(&self, errno: u32) -> bool {
        if errno < 64 {
            self.errno_mask_lo & (1 << errno) != 0
        } else if errno <= ERRNO_MASK_MAX {
            self.errno_mask_hi & (1 << (errno - 64)) != 0
        } else {
            false
        }
    }
}

/// Key of the exact per-(syscall, errno, filesystem) failure counters (`OBSERVER_ERRORS`,
/// per-CPU hash).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ErrorKey {
    /// A [`crate::syscall`] id.
    pub syscall: u32,
    /// Positive errno.
    pub errno: u32,
    /// Kernel dev_t of the filesystem the call worked on (its fd, or the directory a name was
    /// resolved from); 0 for absolute names, which the kernel side does not resolve.
    pub dev: u32,
    pub _pad0: u32,
}

/// Slots of the per-CPU `OBSERVER_COUNTERS` array.
pub const COUNTER_RING_DROPS: u32 = 0;
/// Records written to the ring buffer.
pub const COUNTER_EVENTS: u32 = 1;
/// Records whose path could not be fully read (see `PATH_INCOMPLETE`).
pub const COUNTER_PATH_INCOMPLETE: u32 = 2;
/// Failures counted in `OBSERVER_ERRORS` that could not get a hash slot (map full).
pub const COUNTER_ERROR_KEYS_FULL: u32 = 3;
/// Successful heartbeat calls (utimes family).
pub const COUNTER_HEARTBEAT_OK: u32 = 4;
/// Failed heartbeat calls.
pub const COUNTER_HEARTBEAT_FAILED: u32 = 5;
/// Calls skipped by the comm/cgroup/device filters.
pub const COUNTER_FILTERED: u32 = 6;
/// Successful utimes-family calls that restored explicit times (not a refresh): counted in
/// `COUNTER_HEARTBEAT_OK` too, never sent.
pub const COUNTER_TIMES_SET: u32 = 7;
/// Successful refreshes not sent because the same process refreshed the same name within
/// `REFRESH_COALESCE_NS` (counted in `COUNTER_HEARTBEAT_OK` too).
pub const COUNTER_REFRESH_COALESCED: u32 = 8;
pub const COUNTER_SLOTS: u32 = 9;

/// Capacity of `OBSERVER_ERRORS`.
pub const ERROR_KEYS_MAX: u32 = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layout_is_stable() {
        assert_eq!(offset_of!(RuntimeConfig, errno_mask_hi), 8);
        assert_eq!(offset_of!(RuntimeConfig, flags), 16);
        assert_eq!(offset_of!(RuntimeConfig, delete_sample), 20);
        assert_eq!(offset_of!(RuntimeConfig, self_tgid), 24);
        assert_eq!(offset_of!(RuntimeConfig, create_sample), 28);
        assert_eq!(offset_of!(RuntimeConfig, realtime_offset_ns), 32);
        assert_eq!(size_of::<RuntimeConfig>(), 40);
        assert_eq!(size_of::<EntryCounts>(), 56);
        assert_eq!(offset_of!(EntryCounts, failed), 32);
        assert_eq!(offset_of!(EntryCounts, mkdirs), 48);
        assert_eq!(size_of::<DirKey>(), 16);
        assert_eq!(offset_of!(DirKey, ino), 8);
        assert_eq!(size_of::<ErrorKey>(), 16);
        assert_eq!(offset_of!(DeletePending, dir), 8);
        assert_eq!(offset_of!(DeletePending, tgid), 24);
        assert_eq!(offset_of!(DeletePending, mount), 28);
        assert_eq!(offset_of!(DeletePending, used), 32);
        assert_eq!(offset_of!(DeletePending, by_proc), 40);
        assert_eq!(offset_of!(DeletePending, by_dir), 96);
        assert_eq!(offset_of!(DeletePending, by_mount), 152);
        assert_eq!(size_of::<DeletePending>(), 208);
        assert_eq!(offset_of!(ProcName, cgroup_id), 16);
        assert_eq!(size_of::<ProcName>(), 24);
        assert_eq!(offset_of!(ErrorKey, errno), 4);
        assert_eq!(offset_of!(ErrorKey, dev), 8);
    }

    #[test]
    fn errno_mask_covers_enospc_and_edquot() {
        let mut c = RuntimeConfig::default();
        assert!(c.watch_errno(28));
        assert!(c.watch_errno(122));
        assert!(c.watches_errno(28) && c.watches_errno(122));
        assert!(!c.watches_errno(27) && !c.watches_errno(121) && !c.watches_errno(500));
        assert!(!c.watch_errno(0) && !c.watch_errno(128));
    }
}
