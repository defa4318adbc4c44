//! The orphans section's listing: for each process killed by a signal, what it probably left
//! behind — the entries made while it ran in the directories the kernel saw it create in (and
//! their parents, where its own directories are), grouped into workspaces; and the pid files
//! there naming a process that is gone. Bounded: [`ROWS_MAX`] processes, [`NAMES_BUDGET`]
//! names per report, each directory listed with a deadline and all of them with one (a hung
//! filesystem is skipped).

use std::{collections::BTreeSet, path::Path, time::Duration};

use serde_json::{Value, json};

use crate::{analyze::growth::KilledRow, config::FileConfig, node::leftovers};

/// Killed processes whose leftovers are listed.
const ROWS_MAX: usize = 20;
/// Names looked at per report, over every directory.
const NAMES_BUDGET: usize = 50_000;
/// Names per directory.
const NAMES_PER_DIR: usize = 4096;
/// Entries shown per process (all are counted).
const SHOWN_MAX: usize = 20;
/// Pid files naming a dead owner listed at most.
const DEAD_OWNER_MAX: usize = 200;
/// A listing may take this long before its filesystem counts as not answering...
const LIST_TIMEOUT: Duration = Duration::from_secs(5);
/// ...and all of them this long (directories on hung filesystems each wait their deadline).
const ALL_TIMEOUT: Duration = Duration::from_secs(15);

fn parent(dir: &str) -> Option<&str> {
    match dir.rfind('/') {
        Some(0) if dir.len() > 1 => Some("/"),
        Some(i) if i > 0 => Some(&dir[..i]),
        _ => None,
    }
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// The killed rows as JSON, each with `left`; and the dead-owner pid files found.
pub(super) fn left_behind(config: &FileConfig, killed: &[KilledRow]) -> (Vec<Value>, Vec<Value>) {
    let mut budget = NAMES_BUDGET;
    let started = std::time::Instant::now();
    let mut dead_owner: BTreeSet<(String, u32)> = BTreeSet::new();
    let mounts = crate::node::mounts::MountTable::node();
    let mut rows = Vec::new();
    for (i, k) in killed.iter().enumerate() {
        let mut row = serde_json::to_value(k).unwrap_or(Value::Null);
        if i >= ROWS_MAX || budget == 0 || started.elapsed() > ALL_TIMEOUT {
            rows.push(row);
            continue;
        }
        let mut dirs: BTreeSet<&str> = k.first_in.iter().map(String::as_str).collect();
        // A parent on the same filesystem only (a mount point's parent is another one).
        dirs.extend(
            k.first_in
                .iter()
                .filter(|d| mounts.mount_of(d) != Some(d.as_str()))
                .filter_map(|d| parent(d)),
        );
        let (mut count, mut bytes, mut truncated) = (0u64, 0u64, false);
        let (mut shown, mut spaces) = (Vec::new(), Vec::new());
        for dir in dirs {
            if budget == 0 || started.elapsed() > ALL_TIMEOUT {
                truncated = true;
                break;
            }
            let max = budget.min(NAMES_PER_DIR);
            let (from, to) = (k.ran_from_unix_ns, k.gone_by_unix_ns);
            let path = config.here(Path::new(dir));
            let found = crate::node::fsio::within(&path, LIST_TIMEOUT, move |p| {
                leftovers::scan(p, from, to, max).map_err(std::io::Error::from)
            });
            let Ok(found) = found else {
                truncated = true;
                continue;
            };
            budget = budget.saturating_sub(max);
            truncated |= found.truncated;
            for (name, pid) in found.dead_owner_files {
                if dead_owner.len() < DEAD_OWNER_MAX {
                    dead_owner.insert((join(dir, &name), pid));
                }
            }
            for w in leftovers::workspaces(&found.entries) {
                spaces.push(json!({"dir": dir, "stem": w.stem, "members": w.members}));
            }
            for e in &found.entries {
                count += 1;
                bytes += e.bytes;
                if shown.len() < SHOWN_MAX {
                    shown.push(join(dir, &e.name));
                }
            }
        }
        row["left"] = json!({
            "entries": count,
            "bytes": bytes,
            "shown": shown,
            "workspaces": spaces,
            "truncated": truncated,
        });
        rows.push(row);
    }
    let files = dead_owner
        .into_iter()
        .map(|(path, pid)| json!({"path": path, "pid": pid}))
        .collect();
    (rows, files)
}
