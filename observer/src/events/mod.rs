//! Stage 2 — events: raw ring records decoded into typed events, made absolute and identified
//! (process, container, pod, filesystem); the event's JSON line; the filters clients and
//! `/events` apply.

pub mod decode;
pub mod filter;
pub mod identify;
pub mod kind;
pub mod line;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::node::mounts::{MountTable, MountWatch};
use decode::{Event, SyscallRecord};
use identify::{ProcIdentity, ProcTable};

/// How often the mount table is re-read while events flow, besides when the kernel says it
/// changed.
const MOUNTS_REFRESH: Duration = Duration::from_secs(2);

/// What this stage counts about itself.
#[derive(Debug, Default)]
pub struct EventCounters {
    /// Records that failed to decode.
    pub decode_errors: AtomicU64,
    /// Absolute-path events outside the watched mounts (filtered here, not in the kernel).
    pub filtered: AtomicU64,
}

/// One decoded, identified event, as the later stages see it.
pub struct Observed<'a> {
    pub record: &'a SyscallRecord,
    pub who: &'a ProcIdentity,
    /// The mount point its path lies under.
    pub mount: Option<&'a str>,
    /// Kernel dev of its filesystem: the kernel's, or the mount's for absolute names.
    pub dev: Option<u32>,
    pub unix_ns: u64,
}

/// The events stage, owned by the consumer task: the mount table and the process identities.
pub struct Identify {
    mounts: MountTable,
    mounts_loaded: Instant,
    mounts_watch: MountWatch,
    procs: ProcTable,
    /// Kernel devs of the watched filesystems (empty: all).
    watch_devs: Vec<u32>,
    pub counters: Arc<EventCounters>,
}

impl Identify {
    pub fn new(max_processes: usize, pods_dir: std::path::PathBuf, watch_devs: Vec<u32>) -> Self {
        Self {
            mounts_watch: MountWatch::new(),
            mounts: MountTable::load(),
            mounts_loaded: Instant::now(),
            procs: ProcTable::new(max_processes * 2, pods_dir),
            watch_devs,
            counters: Arc::default(),
        }
    }

    /// Re-reads the mount table when the kernel says it changed, or when it is older than a
    /// couple of seconds (checked once per batch).
    pub fn refresh(&mut self, now: Instant) {
        // A filesystem mounted just before its first event is placed by the new table.
        if self.mounts_watch.changed() || now.duration_since(self.mounts_loaded) > MOUNTS_REFRESH {
            self.mounts = MountTable::load();
            self.mounts_loaded = now;
        }
    }

    /// Decodes one record and makes its path absolute; `None` (counted) when it does not decode.
    pub fn decode(&mut self, raw: &[u8]) -> Option<SyscallRecord> {
        match decode::decode(raw) {
            Ok(mut ev) => {
                Event::absolutize(&mut ev, &mut self.mounts);
                let Event::Syscall(r) = ev;
                Some(r)
            }
            Err(e) => {
                if self.counters.decode_errors.fetch_add(1, Ordering::Relaxed) < 10 {
                    tracing::warn!(error = %e, "undecodable record");
                }
                None
            }
        }
    }

    /// The mount `r`'s path lies under and the kernel dev of its filesystem; `None` (counted as
    /// filtered) for an absolute name outside the watched filesystems: the kernel passes those
    /// through, since it does not resolve absolute names.
    pub fn place(&self, r: &SyscallRecord) -> Option<(Option<&str>, Option<u32>)> {
        let mount = self.mounts.mount_of(&r.path);
        let dev = match r.dev {
            0 => mount.and_then(|m| self.mounts.dev_of(m)),
            d => Some(d),
        };
        if r.dev == 0
            && !self.watch_devs.is_empty()
            && !dev.is_some_and(|d| self.watch_devs.contains(&d))
        {
            self.counters.filtered.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some((mount, dev))
    }

    /// Who made `r` (cached per process; `now`: read once per batch).
    pub fn who(&mut self, r: &SyscallRecord, now: Instant) -> Arc<ProcIdentity> {
        self.procs.get(r.tgid, &r.comm, now).clone()
    }

    /// The filesystem of an absolute path and the path inside it (lock identity).
    pub fn fs_key(&self, path: &str) -> Option<(u32, String)> {
        self.mounts.fs_key(path)
    }
}
