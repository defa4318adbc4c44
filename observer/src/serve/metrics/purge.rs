//! Purge series: runs, items and bytes by action, skips by reason, the trash backlog. Labels
//! are configured policy names and fixed codes only.

use std::sync::atomic::Ordering;

use prometheus_client::encoding::DescriptorEncoder;

use super::{counters, gauges};
use crate::serve::Api;

const ACTIONS: [&str; 3] = ["deleted", "would-delete", "skipped"];

#[derive(Debug, Default)]
pub struct PurgeScrape {
    enabled: bool,
    runs: Vec<((String, String, &'static str), u64)>,
    items: Vec<((String, &'static str), u64)>,
    bytes: Vec<((String, &'static str), u64)>,
    skipped: Vec<((String, &'static str), u64)>,
    trash_pending: u64,
    removed: [(&'static str, u64); 2],
    removal_errors: u64,
    mounts_left: u64,
}

impl PurgeScrape {
    pub fn of(api: &Api) -> Self {
        let Some(p) = api.purge.get() else {
            return Self::default();
        };
        let s = &p.stats;
        let inner = s.inner.lock().unwrap_or_else(|e| e.into_inner());
        let policies: Vec<String> = p
            .purge
            .iter()
            .flat_map(|x| x.policies.iter().map(|p| p.cfg.name.clone()))
            .collect();
        // Every (policy, action) exists from the start, so `increase()` sees the first item.
        let mut items = inner.items.clone();
        let mut bytes = inner.bytes.clone();
        for name in &policies {
            for a in ACTIONS {
                items.entry((name.clone(), a)).or_default();
                if a != "skipped" {
                    bytes.entry((name.clone(), a)).or_default();
                }
            }
        }
        Self {
            enabled: p.purge.is_some(),
            runs: inner.runs.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            items: items.into_iter().collect(),
            bytes: bytes.into_iter().collect(),
            skipped: inner.skipped.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            trash_pending: s.trash_pending_bytes.load(Ordering::Relaxed),
            removed: [
                ("file", s.removed_files.load(Ordering::Relaxed)),
                ("dir", s.removed_dirs.load(Ordering::Relaxed)),
            ],
            removal_errors: s.removal_errors.load(Ordering::Relaxed),
            mounts_left: s.mounts_left.load(Ordering::Relaxed),
        }
    }

    pub fn encode(&self, enc: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        gauges(
            enc,
            "fsobserver_purge_enabled",
            "1 when emergency purge is enabled and its configuration was accepted",
            [(Vec::new(), f64::from(u8::from(self.enabled)))],
        )?;
        if !self.enabled {
            return Ok(());
        }
        counters(
            enc,
            "fsobserver_purge_runs",
            "Purge runs by policy, trigger (manual, errors, free-space, free-inodes, time-to-full) and mode",
            self.runs.iter().map(|((p, t, m), v)| {
                (
                    vec![
                        ("policy", p.clone()),
                        ("trigger", t.clone()),
                        ("mode", m.to_string()),
                    ],
                    *v,
                )
            }),
        )?;
        counters(
            enc,
            "fsobserver_purge_items",
            "Purge decisions by policy and action (deleted, would-delete, skipped)",
            self.items
                .iter()
                .map(|((p, a), v)| (vec![("policy", p.clone()), ("action", a.to_string())], *v)),
        )?;
        counters(
            enc,
            "fsobserver_purge_bytes",
            "Bytes purged (deleted) or that a dry run would purge, by policy",
            self.bytes
                .iter()
                .map(|((p, a), v)| (vec![("policy", p.clone()), ("action", a.to_string())], *v)),
        )?;
        counters(
            enc,
            "fsobserver_purge_skipped",
            "Entries kept by purge, by policy and reason",
            self.skipped
                .iter()
                .map(|((p, r), v)| (vec![("policy", p.clone()), ("reason", r.to_string())], *v)),
        )?;
        gauges(
            enc,
            "fsobserver_purge_trash_pending_bytes",
            "Bytes moved to the trash and not yet removed by the background threads",
            [(Vec::new(), self.trash_pending as f64)],
        )?;
        counters(
            enc,
            "fsobserver_purge_removed",
            "Entries removed from the trash by the background threads (kind: file, dir)",
            self.removed
                .iter()
                .map(|(k, v)| (vec![("kind", k.to_string())], *v)),
        )?;
        counters(
            enc,
            "fsobserver_purge_removal_errors",
            "Trash entries that could not be removed (errors, and mount points left in place)",
            [
                (vec![("kind", "error".to_string())], self.removal_errors),
                (vec![("kind", "mount".to_string())], self.mounts_left),
            ],
        )?;
        Ok(())
    }
}
