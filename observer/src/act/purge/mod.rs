//! Stage 7 — emergency purge. Policies select stale entries beneath allow-listed roots; a
//! planner thread checks and (when executing) moves them into a trash directory on the same
//! filesystem; removal threads delete the trash in the background under a rate budget. Nothing
//! here runs on the async runtime's threads, and every decision is audited as a `purge` event.

pub mod inuse;
pub mod policy;
mod run;
pub mod safefs;
mod scan;
pub mod trigger;
pub mod workers;
mod worktree;

use std::{
    collections::{BTreeMap, VecDeque},
    ffi::OsString,
    os::fd::OwnedFd,
    path::Path,
    sync::{Arc, Mutex, atomic::AtomicU64},
};

use serde::Serialize;

pub use policy::{Purge, check};

/// Why an entry is kept, with a detail (which file, which pid...).
pub type Kept = (Skip, String);

/// Why an entry was kept. The codes are metric label values (a fixed set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Skip {
    TooYoung,
    OpenFiles,
    Locked,
    OwnerAlive,
    LockHolderAlive,
    GitLocked,
    Symlink,
    MountInside,
    Changed,
    TooDeep,
    Limit,
    TargetReached,
    Error,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::TooYoung => "too-young",
            Skip::OpenFiles => "open-files",
            Skip::Locked => "file-locked",
            Skip::OwnerAlive => "owner-alive",
            Skip::LockHolderAlive => "lock-holder-alive",
            Skip::GitLocked => "git-worktree-locked",
            Skip::Symlink => "symlink",
            Skip::MountInside => "mount",
            Skip::Changed => "changed",
            Skip::TooDeep => "too-deep",
            Skip::Limit => "limit",
            Skip::TargetReached => "target-reached",
            Skip::Error => "error",
        }
    }
}

/// One audited decision (also a `{"type":"purge",...}` event).
#[derive(Clone, Debug, Serialize)]
pub struct PurgeItem {
    pub r#type: &'static str,
    pub run_id: u64,
    pub time_unix_ns: u64,
    pub policy: String,
    pub trigger: String,
    /// Who asked: `uid 0 pid 1234 (unix socket)`, `uid 0 (loopback)`, `token NAME`, or
    /// `trigger` for an automatic run.
    pub requested_by: String,
    /// `dry-run` or `execute`.
    pub mode: &'static str,
    pub path: String,
    /// Siblings removed with it (the policy's `group`).
    pub group: Vec<String>,
    /// `deleted` (moved to the trash; removed in the background), `would-delete` (dry run) or
    /// `skipped`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip: Option<&'static str>,
    pub reason: String,
    pub bytes: u64,
    pub entries: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_secs: Option<u64>,
}

/// Free space of a filesystem.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct FreeSpace {
    pub size_bytes: u64,
    pub free_bytes: u64,
    pub inodes: u64,
    pub free_inodes: u64,
}

impl FreeSpace {
    /// `statvfs` of `path` (with a deadline: `None` when the filesystem does not answer).
    pub fn of(path: &Path) -> Option<Self> {
        let s = crate::node::fsio::statvfs(path).ok()?;
        let frag = s.fragment_size();
        Some(Self {
            size_bytes: s.blocks() * frag,
            free_bytes: s.blocks_available() * frag,
            inodes: s.files(),
            free_inodes: s.files_available(),
        })
    }

    pub fn free_percent(&self) -> f64 {
        pct(self.free_bytes, self.size_bytes)
    }

    pub fn free_inodes_percent(&self) -> f64 {
        pct(self.free_inodes, self.inodes)
    }

    /// Bytes and inodes to free to be back at `target` percent (0 when already there).
    pub fn needed(&self, target: f64) -> (u64, u64) {
        let want =
            |total: u64, free: u64| ((total as f64 * target / 100.0) as u64).saturating_sub(free);
        (
            want(self.size_bytes, self.free_bytes),
            if self.inodes == 0 {
                0
            } else {
                want(self.inodes, self.free_inodes)
            },
        )
    }
}

fn pct(a: u64, total: u64) -> f64 {
    if total == 0 {
        100.0
    } else {
        a as f64 * 100.0 / total as f64
    }
}

/// One run of one policy.
#[derive(Clone, Debug, Serialize)]
pub struct PurgeRun {
    pub run_id: u64,
    pub policy: String,
    pub trigger: String,
    pub requested_by: String,
    pub mode: &'static str,
    pub root: String,
    pub started_unix_ns: u64,
    pub finished_unix_ns: u64,
    pub free_before: Option<FreeSpace>,
    pub deleted: u64,
    pub would_delete: u64,
    pub skipped: u64,
    /// Bytes deleted (or that would be).
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub items: Vec<PurgeItem>,
}

impl PurgeRun {
    fn new(
        run_id: u64,
        policy: &str,
        (trigger, requested_by): (&str, &str),
        execute: bool,
        root: &Path,
    ) -> Self {
        Self {
            run_id,
            policy: policy.into(),
            trigger: trigger.into(),
            requested_by: requested_by.into(),
            mode: if execute { "execute" } else { "dry-run" },
            root: root.display().to_string(),
            started_unix_ns: crate::node::clock::now_unix_ns(),
            finished_unix_ns: 0,
            free_before: None,
            deleted: 0,
            would_delete: 0,
            skipped: 0,
            bytes: 0,
            error: None,
            items: Vec::new(),
        }
    }

    fn push(&mut self, item: PurgeItem, audit: &dyn Fn(&PurgeItem)) {
        match item.action {
            "deleted" => {
                self.deleted += 1;
                self.bytes += item.bytes;
            }
            "would-delete" => {
                self.would_delete += 1;
                self.bytes += item.bytes;
            }
            _ => self.skipped += 1,
        }
        audit(&item);
        self.items.push(item);
    }

    fn finish(mut self) -> Self {
        self.finished_unix_ns = crate::node::clock::now_unix_ns();
        self
    }
}

/// A trashed entry for the removal threads.
pub struct TrashJob {
    pub trash: Arc<OwnedFd>,
    pub name: OsString,
    pub bytes: u64,
}

/// Counters for metrics (labels: configured policy names and fixed codes only).
#[derive(Debug, Default)]
pub struct PurgeStats {
    pub inner: Mutex<StatsInner>,
    /// Bytes moved to the trash and not yet removed.
    pub trash_pending_bytes: AtomicU64,
    pub removed_files: AtomicU64,
    pub removed_dirs: AtomicU64,
    pub removal_errors: AtomicU64,
    /// Mount points found inside trashed entries and left in place.
    pub mounts_left: AtomicU64,
    /// Free space of each policy's root as last sampled (by the trigger thread, off the async
    /// runtime; `None` while the filesystem does not answer).
    pub free: Mutex<BTreeMap<String, Option<FreeSpace>>>,
}

#[derive(Debug, Default)]
pub struct StatsInner {
    /// `(policy, trigger, mode)` -> runs.
    pub runs: BTreeMap<(String, String, &'static str), u64>,
    /// `(policy, action)` -> items.
    pub items: BTreeMap<(String, &'static str), u64>,
    /// `(policy, action)` -> bytes.
    pub bytes: BTreeMap<(String, &'static str), u64>,
    /// `(policy, reason)` -> skipped items.
    pub skipped: BTreeMap<(String, &'static str), u64>,
    /// The last runs (newest last), for `GET /purge`.
    pub recent: VecDeque<PurgeRun>,
}

/// Runs kept for `GET /purge`.
const RECENT_RUNS: usize = 8;

impl PurgeStats {
    fn record(&self, run: &PurgeRun) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *s.runs
            .entry((run.policy.clone(), run.trigger.clone(), run.mode))
            .or_default() += 1;
        for it in &run.items {
            *s.items.entry((run.policy.clone(), it.action)).or_default() += 1;
            if let Some(reason) = it.skip {
                *s.skipped.entry((run.policy.clone(), reason)).or_default() += 1;
            } else {
                *s.bytes.entry((run.policy.clone(), it.action)).or_default() += it.bytes;
            }
        }
        let mut brief = run.clone();
        brief.items.truncate(1000);
        s.recent.push_back(brief);
        while s.recent.len() > RECENT_RUNS {
            s.recent.pop_front();
        }
    }
}

pub(crate) fn unix_now() -> i64 {
    (crate::node::clock::now_unix_ns() / 1_000_000_000) as i64
}

pub use workers::{PurgeError, Purger, Request};
