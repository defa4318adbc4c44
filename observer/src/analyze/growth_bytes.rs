//! Bytes, beside the exact entry counts: the kernel counts entries, not bytes (the write
//! success path stays a compare), so bytes come from measuring the culprit directories
//! themselves — a bounded `du` ([`crate::node::du`]) of the top rolled-up directories every
//! `growth.bytes_interval_secs`, off the event path. Each figure is exact when it was measured
//! (`complete`: every entry looked at) and a lower bound otherwise; bytes added and the rate
//! are the change since the directory was first measured. A workload's bytes are those of the
//! measured directories it was first to create entries in (the kernel names each directory
//! with its first creator): an attribution by directory, not by file.

use std::collections::{BTreeMap, HashMap};

use observer_common::config::DirKey;
use serde::Serialize;

use super::{Growth, GrowthRow};
use crate::node::du::Tree;

/// Directories measured at most per pass, and whose measurements are kept.
pub const SIZED_MAX: usize = 32;

/// A directory's bytes.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct DirBytes {
    /// Allocated bytes below it at the last measurement.
    pub bytes: u64,
    /// Change since it was first measured.
    pub added: i64,
    /// Change per minute between the last two measurements.
    pub per_min: f64,
    /// Entries looked at; `complete` when that was all of them (else `bytes` is a lower bound).
    pub entries: u64,
    pub complete: bool,
    pub measured_unix_ns: u64,
    pub first_measured_unix_ns: u64,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Sized {
    first: (u64, u64),
    prev: Option<(u64, u64)>,
    last: (u64, u64),
    entries: u64,
    complete: bool,
}

impl Growth {
    /// The directories to measure now: the culprits, largest first (mount, directory).
    pub fn size_targets(&self, share: f64, min_net: i64, now_ns: u64) -> Vec<(String, String)> {
        self.culprits(share, min_net, now_ns)
            .into_iter()
            .take(SIZED_MAX)
            .map(|r| (r.mount.unwrap_or_else(|| "/".into()), r.dir))
            .collect()
    }

    /// One pass's measurements (`(mount, dir, tree)`), taken at `now_ns`.
    pub fn note_sizes(&mut self, measured: Vec<(String, String, Tree)>, now_ns: u64) {
        let mut by_workload: BTreeMap<String, u64> = BTreeMap::new();
        for (mount, dir, tree) in measured {
            for (&(dev, ino), &b) in &tree.dirs {
                let key = DirKey { dev, _pad0: 0, ino };
                let workload = self
                    .names
                    .peek(&key)
                    .map_or_else(|| "unattributed".into(), |n| n.first.workload.clone());
                *by_workload.entry(workload).or_default() += b;
            }
            let s = self.sizes.entry((mount, dir)).or_insert_with(|| Sized {
                first: (now_ns, tree.bytes),
                last: (now_ns, tree.bytes),
                ..Default::default()
            });
            if s.last.0 != now_ns {
                s.prev = Some(s.last);
            }
            s.last = (now_ns, tree.bytes);
            s.entries = tree.entries;
            s.complete = tree.complete;
        }
        if self.sizes.len() > SIZED_MAX {
            let mut by_age: Vec<_> = self
                .sizes
                .iter()
                .map(|(k, s)| (s.last.0, k.clone()))
                .collect();
            by_age.sort();
            for (_, k) in by_age.into_iter().take(self.sizes.len() - SIZED_MAX) {
                self.sizes.remove(&k);
            }
        }
        self.workload_bytes = by_workload;
    }

    fn bytes_of(&self, mount: Option<&str>, dir: &str) -> Option<DirBytes> {
        let s = self
            .sizes
            .get(&(mount.unwrap_or("/").to_string(), dir.to_string()))?;
        let per_min = s.prev.map_or(0.0, |(t, b)| {
            let secs = (s.last.0.saturating_sub(t) as f64 / 1e9).max(1.0);
            (s.last.1 as i64 - b as i64) as f64 * 60.0 / secs
        });
        Some(DirBytes {
            bytes: s.last.1,
            added: s.last.1 as i64 - s.first.1 as i64,
            per_min,
            entries: s.entries,
            complete: s.complete,
            measured_unix_ns: s.last.0,
            first_measured_unix_ns: s.first.0,
        })
    }

    /// Fills in the bytes of rows that were measured.
    pub(super) fn with_bytes(&self, rows: &mut [GrowthRow]) {
        for r in rows {
            r.bytes = self.bytes_of(r.mount.as_deref(), &r.dir);
        }
    }

    /// Bytes per workload in the directories measured last (see the module's doc).
    pub(super) fn workload_bytes(&self) -> &BTreeMap<String, u64> {
        &self.workload_bytes
    }
}

/// The measurements kept, keyed by (mount, directory).
pub(super) type Sizes = HashMap<(String, String), Sized>;
