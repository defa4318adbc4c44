//! Stage 2 — events: raw ring records decoded into typed events, made absolute and identified
//! (process, container, pod, filesystem); the event's JSON line; the filters clients and
//! `/events` apply.

pub mod decode;
pub mod filter;
pub mod identify;
pub mod kind;
pub mod line;
pub mod views;

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
    /// Records from another mount namespace put in the node's view.
    pub paths_translated: AtomicU64,
    /// Records from another mount namespace left in the caller's view (see [`views`]).
    pub paths_untranslated: AtomicU64,
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

/// The events stage, owned by the consumer task: the node's mount table, the mount namespaces'
/// views and the process identities.
pub struct Identify {
    /// The node's mount table.
    mounts: MountTable,
    views: views::Views,
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
            mounts_watch: MountWatch::node(),
            mounts: MountTable::node(),
            views: views::Views::read(),
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
            self.mounts = MountTable::node();
            self.mounts_loaded = now;
        }
    }

    /// Decodes one record and puts its path in the node's view (absolute, through the caller's
    /// mount namespace); `None` (counted) when it does not decode. `now`: read once per batch.
    pub fn decode(&mut self, raw: &[u8], now: Instant) -> Option<SyscallRecord> {
        match decode::decode(raw) {
            Ok(mut ev) => {
                // A filesystem-relative path is placed through the node's table directly.
                let fs_relative = Event::absolutize(&mut ev, &mut self.mounts);
                let Event::Syscall(mut r) = ev;
                if !fs_relative {
                    let before = self.views.counts;
                    self.views.place(&mut r, &self.mounts, now);
                    let after = self.views.counts;
                    let c = &self.counters;
                    c.paths_translated
                        .fetch_add(after.translated - before.translated, Ordering::Relaxed);
                    c.paths_untranslated
                        .fetch_add(after.untranslated - before.untranslated, Ordering::Relaxed);
                }
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
        let mount = r.node_path().and_then(|p| self.mounts.mount_of(p));
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
        let peer = self.views.peer(r.mnt_ns);
        self.procs
            .get(r.tgid, &r.comm, r.cgroup_id, peer, now)
            .clone()
    }

    /// The filesystem of a record's file and the path inside it (lock identity): only for a
    /// path in the node's view, whichever namespace the caller was in.
    pub fn fs_key(&self, r: &SyscallRecord) -> Option<(u32, String)> {
        self.mounts.fs_key(r.node_path()?)
    }
}
