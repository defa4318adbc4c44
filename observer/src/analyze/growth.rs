//! Growth attribution — who is filling this disk. The kernel counts every entry created and
//! removed, exactly, per directory, per process and per filesystem (`EntryCounts`, beside the
//! deletions); it names a directory the first time it keys one (`HOOK_DIR_NAME`: the path and
//! the process that came first). This table reads those counts every `growth.interval_ms`,
//! keeps what a person needs to find the cause: the directories where entries accumulate
//! (rolled up: a directory whose children each grow a little, like a worktree or lockfile
//! directory, is reported as the place), their creators, the processes and workloads creating,
//! and cleanup activity (when entries were last removed there, and by whom).
//!
//! Bounded: at most [`NAMES_MAX`] directory names, the kernel's map size of directories
//! (16,384), [`PROCS_MAX`] processes.

use std::{
    collections::{BTreeMap, HashMap},
    num::NonZeroUsize,
};

use lru::LruCache;
use observer_common::config::{DirKey, EntryCounts};
use serde::Serialize;

pub use self::bytes::DirBytes;

/// Directory names kept (the kernel names a directory again if it forgets and sees it anew).
pub const NAMES_MAX: usize = 65_536;
/// Processes whose counts and identity are kept (the kernel's per-process map size).
pub const PROCS_MAX: usize = 4096;
/// Rolled-up rows a report lists at most per filesystem.
pub const CULPRITS_MAX: usize = 10;

/// A process that created or removed entries.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Actor {
    pub pid: u32,
    pub comm: String,
    pub workload: String,
}

/// What the kernel said about a directory when it first keyed it.
#[derive(Clone, Debug)]
struct DirName {
    /// In the node's view.
    path: String,
    mount: Option<String>,
    first: Actor,
}

#[derive(Clone, Debug, Default)]
struct DirState {
    counts: EntryCounts,
    /// `(unix ns, created+mkdirs, removed)` at the start of the current window, and of the one
    /// before (rates are taken over both, so a window just begun still has one).
    base: (u64, u64, u64),
    prev_base: Option<(u64, u64, u64)>,
    last_removal_ns: Option<u64>,
    last_removed_by: Option<Actor>,
}

#[derive(Clone, Debug, Default)]
struct ProcState {
    who: Option<Actor>,
    counts: EntryCounts,
    /// Unix ns of the read before the one that first counted it (it ran since then at least).
    since_ns: u64,
}

/// One directory the kernel keys (the directory a name was resolved against; for an open that
/// created its file, the file's own directory), or a rolled-up directory.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct GrowthRow {
    /// The directory (node view); `(dev D ino N)` when never named.
    pub dir: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// Entries created (files, links, symlinks, nodes) and directories created.
    pub created: u64,
    pub mkdirs: u64,
    /// Entries removed (files and directories).
    pub removed: u64,
    /// created + mkdirs - removed.
    pub net: i64,
    /// Net entries per minute over the current window.
    pub net_per_min: f64,
    /// Who created the first entry the kernel counted here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_creator: Option<Actor>,
    /// Creating processes (the first creator of each directory below), most entries first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub creators: Vec<Actor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_removal_unix_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_removed_by: Option<Actor>,
    /// Entries grew here and none were ever removed while the observer watched.
    pub never_cleaned: bool,
    /// Directories whose counts this row sums.
    pub dirs: u64,
    /// Bytes below it, when it was measured (culprits are; see `growth_bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<DirBytes>,
}

/// A process killed by a signal, and the entries it left behind (created and not removed).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct KilledRow {
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    pub workload: String,
    pub signal: u32,
    /// Net entries it left (created minus removed), over every directory.
    pub entries_left: i64,
    /// Directories the kernel first saw it create in (at most [`KILLED_DIRS_MAX`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub first_in: Vec<String>,
    /// It was creating from this time at the latest (unix ns; one read before its first count)...
    pub ran_from_unix_ns: u64,
    /// ...and was gone by this time (the read that found it killed).
    pub gone_by_unix_ns: u64,
}

/// Killed processes listed at most, and directories per process.
pub const KILLED_ROWS_MAX: usize = 200;
pub const KILLED_DIRS_MAX: usize = 10;

/// One process's (or, summed, one workload's) entries.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ActorRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    pub workload: String,
    pub created: u64,
    pub mkdirs: u64,
    pub removed: u64,
    /// (Workloads) bytes in the measured directories it was first to create entries in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

pub struct Growth {
    names: LruCache<DirKey, DirName>,
    dirs: HashMap<DirKey, DirState>,
    procs: LruCache<u32, ProcState>,
    window_ns: u64,
    /// Unix ns of the first read.
    started_ns: Option<u64>,
    /// Directory names received.
    pub named: u64,
    /// Removals and creates the kernel could place in no directory (names resolved from `/`
    /// in tracepoint mode: key dev 0).
    pub unplaced: EntryCounts,
    /// Processes killed by a signal that left entries behind, most entries first.
    pub killed: Vec<KilledRow>,
    sizes: bytes::Sizes,
    workload_bytes: BTreeMap<String, u64>,
    /// Unix ns of the last read.
    last_read_ns: Option<u64>,
    /// Killed processes and when a read first found them gone.
    killed_seen: HashMap<u32, u64>,
}

fn removed(c: &EntryCounts) -> u64 {
    c.files + c.dirs
}

fn added(c: &EntryCounts) -> u64 {
    c.created + c.mkdirs
}

impl Growth {
    pub fn new(window_secs: u64) -> Self {
        Self {
            names: LruCache::new(NonZeroUsize::new(NAMES_MAX).unwrap_or(NonZeroUsize::MIN)),
            dirs: HashMap::new(),
            procs: LruCache::new(NonZeroUsize::new(PROCS_MAX).unwrap_or(NonZeroUsize::MIN)),
            window_ns: window_secs.max(1) * 1_000_000_000,
            started_ns: None,
            named: 0,
            unplaced: EntryCounts::default(),
            killed: Vec::new(),
            sizes: Default::default(),
            workload_bytes: BTreeMap::new(),
            last_read_ns: None,
            killed_seen: HashMap::new(),
        }
    }

    /// A `HOOK_DIR_NAME` record: directory `key` is `path` (node view), first used by `who`.
    pub fn name(&mut self, key: DirKey, path: String, mount: Option<String>, who: Actor) {
        self.named += 1;
        self.names.put(
            key,
            DirName {
                path,
                mount,
                first: who,
            },
        );
    }

    /// Processes in `by_proc` whose identity is not known yet (the caller reads them).
    pub fn unknown_procs<'a>(&self, by_proc: impl Iterator<Item = &'a u32>) -> Vec<u32> {
        by_proc
            .filter(|p| self.procs.peek(p).is_none_or(|s| s.who.is_none()))
            .copied()
            .collect()
    }

    /// One read of the kernel's counts (sums over CPUs) at `now_ns` (unix), with identities
    /// for processes new to the table (`who`).
    pub fn tick(
        &mut self,
        by_dir: &HashMap<DirKey, EntryCounts>,
        by_proc: &HashMap<u32, EntryCounts>,
        who: &HashMap<u32, Actor>,
        now_ns: u64,
    ) {
        self.started_ns.get_or_insert(now_ns);
        // Who removed most since the last read: named as the remover of this read's removals.
        let mut remover: Option<(u64, u32)> = None;
        for (&pid, c) in by_proc {
            let prev = self.procs.get(&pid).map(|s| s.counts).unwrap_or_default();
            let d = removed(c).saturating_sub(removed(&prev));
            if d > 0 && remover.is_none_or(|(n, _)| d > n) {
                remover = Some((d, pid));
            }
            let since_ns = self.last_read_ns.unwrap_or(now_ns);
            let state = self.procs.get_or_insert_mut(pid, || ProcState {
                since_ns,
                ..Default::default()
            });
            state.counts = *c;
            if state.who.is_none() {
                state.who = who.get(&pid).cloned();
            }
        }
        let remover = remover.and_then(|(_, pid)| {
            self.procs
                .peek(&pid)
                .and_then(|s| s.who.clone())
                .or_else(|| {
                    Some(Actor {
                        pid,
                        ..Default::default()
                    })
                })
        });
        let window = self.window_ns;
        let mut next = HashMap::with_capacity(by_dir.len());
        self.unplaced = EntryCounts::default();
        for (k, c) in by_dir {
            if k.dev == 0 {
                self.unplaced.add(c);
                continue;
            }
            // Keeps the names of the directories the kernel still counts (at most its map's
            // 16,384) the most recent: only names of forgotten directories are evicted.
            let _: Option<&DirName> = self.names.get(k);
            // A key new to the kernel's map counted from zero since it was added (at the
            // earliest when the counting began).
            let started = self.started_ns.unwrap_or(now_ns);
            let mut s = self.dirs.remove(k).unwrap_or_else(|| DirState {
                base: (started, 0, 0),
                ..Default::default()
            });
            if removed(c) > removed(&s.counts) {
                s.last_removal_ns = Some(now_ns);
                s.last_removed_by = remover.clone();
            }
            s.counts = *c;
            if now_ns.saturating_sub(s.base.0) > window {
                s.prev_base = Some(s.base);
                s.base = (now_ns, added(c), removed(c));
            }
            next.insert(*k, s);
        }
        self.dirs = next;
        self.last_read_ns = Some(now_ns);
    }

    /// What processes killed by a signal (`killed`: tgid -> signal, of processes gone) left
    /// behind: their exact net entries (created minus removed, from the kernel's per-process
    /// counts), and the directories the kernel first saw them create in.
    pub fn note_killed(&mut self, killed: &HashMap<u32, u32>) {
        let now_ns = self.last_read_ns.unwrap_or_default();
        self.killed_seen.retain(|pid, _| killed.contains_key(pid));
        // One pass over the names for every killed process (not one per process).
        let mut first_in: HashMap<u32, Vec<String>> = HashMap::new();
        for (_, n) in self.names.iter() {
            if killed.contains_key(&n.first.pid) {
                let dirs = first_in.entry(n.first.pid).or_default();
                if dirs.len() < KILLED_DIRS_MAX {
                    dirs.push(n.path.clone());
                }
            }
        }
        let mut rows: Vec<KilledRow> = Vec::new();
        for (&pid, &signal) in killed {
            let Some(s) = self.procs.peek(&pid) else {
                continue;
            };
            let net = added(&s.counts) as i64 - removed(&s.counts) as i64;
            if net <= 0 {
                continue;
            }
            let dirs = first_in.remove(&pid).unwrap_or_default();
            rows.push(KilledRow {
                pid,
                comm: s.who.as_ref().map(|w| w.comm.clone()),
                workload: s
                    .who
                    .as_ref()
                    .map_or_else(|| "unknown".into(), |w| w.workload.clone()),
                signal,
                entries_left: net,
                first_in: dirs,
                ran_from_unix_ns: s.since_ns,
                gone_by_unix_ns: *self.killed_seen.entry(pid).or_insert(now_ns),
            });
        }
        rows.sort_by(|a, b| b.entries_left.cmp(&a.entries_left).then(a.pid.cmp(&b.pid)));
        rows.truncate(KILLED_ROWS_MAX);
        self.killed = rows;
    }

    fn row(&self, k: &DirKey, s: &DirState, now_ns: u64) -> GrowthRow {
        let name = self.names.peek(k);
        let c = &s.counts;
        let net = added(c) as i64 - removed(c) as i64;
        let base = s.prev_base.unwrap_or(s.base);
        let base_net = base.1 as i64 - base.2 as i64;
        let secs = (now_ns.saturating_sub(base.0) as f64 / 1e9).max(1.0);
        GrowthRow {
            dir: name.map_or_else(
                || format!("(dev {} ino {})", k.dev, k.ino),
                |n| n.path.clone(),
            ),
            mount: name.and_then(|n| n.mount.clone()),
            created: c.created,
            mkdirs: c.mkdirs,
            removed: removed(c),
            net,
            net_per_min: (net - base_net) as f64 * 60.0 / secs,
            first_creator: name.map(|n| n.first.clone()),
            creators: Vec::new(),
            last_removal_unix_ns: s.last_removal_ns,
            last_removed_by: s.last_removed_by.clone(),
            never_cleaned: removed(c) == 0 && added(c) > 0,
            dirs: 1,
            bytes: None,
        }
    }

    /// Every directory the kernel keys now, most net entries first (at most `k`).
    pub fn dirs(&self, k: usize, now_ns: u64) -> Vec<GrowthRow> {
        let mut rows: Vec<GrowthRow> = self
            .dirs
            .iter()
            .map(|(key, s)| self.row(key, s, now_ns))
            .collect();
        rows.sort_by(|a, b| b.net.cmp(&a.net).then_with(|| a.dir.cmp(&b.dir)));
        rows.truncate(k);
        self.with_bytes(&mut rows);
        rows
    }

    /// Processes with the most entries created, at most `k`; and the same summed per workload.
    pub fn actors(&self, k: usize) -> (Vec<ActorRow>, Vec<ActorRow>) {
        let mut procs = Vec::new();
        let mut wl: BTreeMap<String, ActorRow> = BTreeMap::new();
        for (pid, s) in self.procs.iter() {
            let workload = s
                .who
                .as_ref()
                .map_or("unknown".into(), |w| w.workload.clone());
            let c = &s.counts;
            let w = wl.entry(workload.clone()).or_insert_with(|| ActorRow {
                workload: workload.clone(),
                ..Default::default()
            });
            w.created += c.created;
            w.mkdirs += c.mkdirs;
            w.removed += removed(c);
            procs.push(ActorRow {
                pid: Some(*pid),
                comm: s.who.as_ref().map(|w| w.comm.clone()),
                workload,
                created: c.created,
                mkdirs: c.mkdirs,
                removed: removed(c),
                bytes: None,
            });
        }
        let key = |r: &ActorRow| std::cmp::Reverse(r.created + r.mkdirs);
        procs.sort_by_key(key);
        procs.truncate(k);
        let mut wl: Vec<ActorRow> = wl.into_values().collect();
        for w in &mut wl {
            w.bytes = self.workload_bytes().get(&w.workload).copied();
        }
        wl.sort_by_key(key);
        wl.truncate(k);
        (procs, wl)
    }

    /// Unix ns of the first read (none yet: `None`).
    pub fn since_ns(&self) -> Option<u64> {
        self.started_ns
    }
}

#[path = "growth_bytes.rs"]
mod bytes;
#[path = "growth_culprits.rs"]
mod culprits;

#[cfg(test)]
#[path = "growth_tests.rs"]
mod tests;
