//! The rolled-up view of the growth table: where entries accumulate, per filesystem.

use std::collections::{BTreeMap, HashMap};

use super::{CULPRITS_MAX, Growth, GrowthRow};

impl Growth {
    /// Where entries accumulate, per filesystem: every named directory's counts added to its
    /// ancestors up to its mount point. A directory is a culprit when its subtree holds at
    /// least `share` of its filesystem's net growth (and `min_net` entries) and that growth is
    /// its own: either made directly in it, or spread over its children (no child subtree
    /// holds half of it) — a worktree or lockfile directory, not the parent of one. Shallowest
    /// first; nothing below a culprit is reported again.
    pub fn culprits(&self, share: f64, min_net: i64, now_ns: u64) -> Vec<GrowthRow> {
        let mut tree: BTreeMap<(String, String), GrowthRow> = BTreeMap::new();
        let mut direct: HashMap<(String, String), i64> = HashMap::new();
        let mut mount_net: HashMap<String, i64> = HashMap::new();
        for (k, s) in &self.dirs {
            let Some(name) = self.names.peek(k) else {
                continue;
            };
            let row = self.row(k, s, now_ns);
            let mount = name.mount.clone().unwrap_or_else(|| "/".into());
            *mount_net.entry(mount.clone()).or_default() += row.net;
            *direct
                .entry((mount.clone(), name.path.clone()))
                .or_default() += row.net;
            for dir in ancestors(&name.path, &mount) {
                let e = tree
                    .entry((mount.clone(), dir.to_string()))
                    .or_insert_with(|| GrowthRow {
                        dir: dir.to_string(),
                        mount: Some(mount.clone()),
                        never_cleaned: true,
                        dirs: 0,
                        ..Default::default()
                    });
                sum_into(e, &row);
            }
        }
        // Largest child subtree of each directory.
        let mut largest_child: HashMap<(String, String), i64> = HashMap::new();
        for ((mount, dir), row) in &tree {
            if let Some(parent) = parent_of(dir, mount) {
                let e = largest_child
                    .entry((mount.clone(), parent.to_string()))
                    .or_default();
                *e = (*e).max(row.net);
            }
        }
        let mut order: Vec<&(String, String)> = tree.keys().collect();
        order.sort_by_key(|(_, d)| (d.len(), d.clone()));
        let mut reported: Vec<(String, String)> = Vec::new();
        let mut out = Vec::new();
        for key in order {
            let (mount, dir) = key;
            let below = |(m, d): &(String, String)| {
                m == mount
                    && (d == "/"
                        || dir
                            .strip_prefix(d.as_str())
                            .is_some_and(|r| r.starts_with('/')))
            };
            if reported.iter().any(below) {
                continue;
            }
            let row = &tree[key];
            let total = mount_net.get(mount).copied().unwrap_or(0);
            if total <= 0 || row.net < min_net || (row.net as f64) < share * total as f64 {
                continue;
            }
            let own = direct.get(key).copied().unwrap_or(0);
            let child = largest_child.get(key).copied().unwrap_or(0);
            if 2 * own >= row.net || 2 * child < row.net {
                reported.push(key.clone());
                out.push(row.clone());
            }
        }
        out.sort_by(|a, b| b.net.cmp(&a.net).then_with(|| a.dir.cmp(&b.dir)));
        out.truncate(CULPRITS_MAX * mount_net.len().max(1));
        self.with_bytes(&mut out);
        out
    }
}

/// `path` and its ancestors down to (and including) `mount`, deepest first.
fn ancestors<'a>(path: &'a str, mount: &str) -> Vec<&'a str> {
    let mut out = vec![path];
    let mut dir = path;
    while let Some(p) = parent_of(dir, mount) {
        out.push(p);
        dir = p;
    }
    out
}

/// The parent of `dir` while it stays on `mount` (`None` at the mount point).
fn parent_of<'a>(dir: &'a str, mount: &str) -> Option<&'a str> {
    let mp = mount.trim_end_matches('/');
    if dir.len() <= mp.len().max(1) {
        return None;
    }
    match dir.rfind('/') {
        Some(0) => mp.is_empty().then_some("/"),
        Some(i) if i >= mp.len() => Some(&dir[..i]),
        _ => None,
    }
}

fn sum_into(e: &mut GrowthRow, r: &GrowthRow) {
    e.created += r.created;
    e.mkdirs += r.mkdirs;
    e.removed += r.removed;
    e.net += r.net;
    e.net_per_min += r.net_per_min;
    e.dirs += 1;
    e.never_cleaned &= r.never_cleaned || r.created + r.mkdirs == 0;
    if r.last_removal_unix_ns > e.last_removal_unix_ns {
        e.last_removal_unix_ns = r.last_removal_unix_ns;
        e.last_removed_by = r.last_removed_by.clone();
    }
    if let Some(c) = &r.first_creator {
        if e.first_creator.is_none() {
            e.first_creator = Some(c.clone());
        }
        if e.creators.len() < 5
            && !e
                .creators
                .iter()
                .any(|x| x.comm == c.comm && x.workload == c.workload)
        {
            e.creators.push(c.clone());
        }
    }
}
