//! Stage 4 — aggregate: decoded events into bounded per-path-prefix, per-process and
//! per-workload counters, plus filesystem capacity (time-to-full). Memory is bounded by the
//! configured table sizes; evicted keys fold into an "other" bucket so totals stay exact.

use serde::Serialize;

use super::leak::{self, LeakConfig, LeakDetector};
use super::table::{Bounded, Counts, Delta, Merge};
use crate::events::{decode::SyscallRecord, identify::ProcIdentity, kind::EventKind};

/// Sizes and rollup depth (`[aggregate]` in the config).
#[derive(Clone, Debug)]
pub struct Limits {
    pub path_depth: usize,
    pub max_paths: usize,
    pub max_processes: usize,
    pub max_workloads: usize,
    pub leak: LeakConfig,
}

/// A process's counters with who it is.
#[derive(Default)]
pub struct ProcEntry {
    pub identity: ProcIdentity,
    pub counts: Counts,
}

impl Merge for ProcEntry {
    fn merge_into(&self, other: &mut Counts) {
        other.merge(&self.counts);
    }
}

pub struct Aggregator {
    limits: Limits,
    pub paths: Bounded<String, Counts>,
    pub procs: Bounded<(u32, u64), ProcEntry>,
    pub workloads: Bounded<String, Counts>,
    pub leaks: LeakDetector,
    /// Scratch for the path key of the event being observed.
    key: String,
    /// Events aggregated.
    pub events: u64,
}

/// `path` rolled up to `depth` directory levels below its mount point, as `<prefix>/*`
/// ("this directory and everything below it"). The file name itself never becomes a key.
#[cfg(test)]
pub fn rollup(path: &str, mount_point: Option<&str>, depth: usize) -> String {
    let mut key = String::new();
    rollup_into(&mut key, path, mount_point, depth);
    key
}

/// Marks a path prefix that is only a container's view (the node has no name for it).
pub const CALLER_VIEW: &str = "(in container)";

/// [`rollup`] into a reused buffer (once per event: no allocation once it has grown).
pub fn rollup_into(key: &mut String, path: &str, mount_point: Option<&str>, depth: usize) {
    key.clear();
    if !path.starts_with('/') {
        key.push_str("(unknown)");
        return;
    }
    let mp = mount_point.unwrap_or("/").trim_end_matches('/');
    let rest = path.strip_prefix(mp).unwrap_or(path);
    let mut comps = rest.split('/').filter(|c| !c.is_empty()).peekable();
    key.push_str(mp);
    let mut taken = 0;
    // The last component is the file (or the directory) the call named: roll up its parent.
    while let Some(c) = comps.next() {
        if taken == depth || comps.peek().is_none() {
            break;
        }
        key.push('/');
        key.push_str(c);
        taken += 1;
    }
    key.push_str("/*");
}

impl Aggregator {
    pub fn new(limits: Limits) -> Self {
        Self {
            paths: Bounded::new(limits.max_paths),
            procs: Bounded::new(limits.max_processes),
            workloads: Bounded::new(limits.max_workloads),
            leaks: LeakDetector::new(limits.leak.clone(), limits.max_paths),
            limits,
            events: 0,
            key: String::new(),
        }
    }

    /// Adds one decoded event, made by `who`, whose path is on `mount_point`.
    pub fn observe(&mut self, r: &SyscallRecord, who: &ProcIdentity, mount_point: Option<&str>) {
        self.events += 1;
        let errno_name = (r.errno != 0).then(|| crate::node::errno::name_static(r.errno));
        let delta = delta_of(r, errno_name.as_deref());
        rollup_into(&mut self.key, &r.path, mount_point, self.limits.path_depth);
        // A path only in its container's view is not the node's path of that name.
        if r.view == crate::events::decode::PathView::Caller {
            self.key.insert_str(0, CALLER_VIEW);
        }
        let key = self.key.as_str();
        if self.leaks.enabled() && r.errno == 0 {
            match r.kind() {
                EventKind::Create => self.leaks.created(key, who.pid, &who.comm),
                EventKind::Delete => self.leaks.deleted(key),
                _ => {}
            }
        }
        self.paths.entry(key).add(&delta);
        let e = self.procs.entry(&(who.pid, who.start_time));
        if e.identity.pid == 0 {
            e.identity = who.clone();
        }
        e.counts.add(&delta);
        self.workloads
            .entry(who.workload_label.as_str())
            .add(&delta);
    }

    /// Current aggregates, `k` heaviest keys per table.
    pub fn top(&self, k: usize) -> TopSnapshot {
        let (paths, paths_other) = self.paths.top(k, Counts::weight);
        let (procs, procs_other) = self.procs.top(k, |e| e.counts.weight());
        let (wl, wl_other) = self.workloads.top(k, Counts::weight);
        TopSnapshot {
            events: self.events,
            paths: paths
                .into_iter()
                .map(|(key, c)| PathRow {
                    path_prefix: key.clone(),
                    counts: c.clone(),
                })
                .collect(),
            paths_other,
            paths_tracked: self.paths.len(),
            paths_evicted: self.paths.evicted,
            processes: procs
                .into_iter()
                .map(|(_, e)| ProcRow {
                    process: e.identity.clone(),
                    workload: e.identity.workload.label(),
                    counts: e.counts.clone(),
                })
                .collect(),
            processes_other: procs_other,
            processes_tracked: self.procs.len(),
            processes_evicted: self.procs.evicted,
            workloads: wl
                .into_iter()
                .map(|(key, c)| WorkloadRow {
                    workload: key.clone(),
                    counts: c.clone(),
                })
                .collect(),
            workloads_other: wl_other,
            leaks: self.leaks.suspects(std::time::Instant::now()),
        }
    }
}

/// What one event adds (`errno_name`: the name of its errno, when it failed).
fn delta_of<'a>(r: &SyscallRecord, errno_name: Option<&'a str>) -> Delta<'a> {
    let mut d = Delta {
        error: errno_name.map(|n| (n, r.syscall_name())),
        ..Delta::default()
    };
    match r.kind() {
        EventKind::Heartbeat if r.errno == 0 => d.heartbeats_ok = 1,
        EventKind::Heartbeat => d.heartbeats_failed = 1,
        EventKind::Delete if r.errno == 0 => d.deletes = 1,
        EventKind::Create => d.creates = 1,
        _ => {}
    }
    if r.errno != 0 && observer_common::syscall::is_write_family(r.syscall) {
        d.bytes_failed = r.count;
    }
    d
}

#[derive(Clone, Debug, Serialize)]
pub struct PathRow {
    pub path_prefix: String,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProcRow {
    #[serde(flatten)]
    pub process: ProcIdentity,
    pub workload: String,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Clone, Debug, Serialize)]
pub struct WorkloadRow {
    pub workload: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// `GET /top`.
#[derive(Clone, Debug, Serialize)]
pub struct TopSnapshot {
    pub events: u64,
    pub paths: Vec<PathRow>,
    pub paths_other: Counts,
    pub paths_tracked: usize,
    pub paths_evicted: u64,
    pub processes: Vec<ProcRow>,
    pub processes_other: Counts,
    pub processes_tracked: usize,
    pub processes_evicted: u64,
    pub workloads: Vec<WorkloadRow>,
    pub workloads_other: Counts,
    /// Suspected leaks (creates outpacing deletes), largest first.
    pub leaks: Vec<leak::LeakRow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_only_in_its_containers_view_is_never_the_nodes_path_of_that_name() {
        let mut agg = Aggregator::new(Limits {
            path_depth: 2,
            max_paths: 16,
            max_processes: 16,
            max_workloads: 16,
            leak: LeakConfig {
                window: std::time::Duration::from_secs(60),
                min_net: 10,
                ratio: 2.0,
                create_sample: 0,
                delete_sample: 0,
            },
        });
        let who = ProcIdentity::default();
        let node = crate::events::line::tests::record(1, 28, "/data/x/big", "dd");
        let mut caller = node.clone();
        caller.view = crate::events::decode::PathView::Caller;
        agg.observe(&node, &who, Some("/"));
        agg.observe(&caller, &who, None);
        let top = agg.top(10);
        let keys: Vec<String> = top.paths.iter().map(|p| p.path_prefix.clone()).collect();
        assert!(keys.contains(&"/data/x/*".to_string()), "{keys:?}");
        assert!(
            keys.contains(&"(in container)/data/x/*".to_string()),
            "{keys:?}"
        );
    }

    #[test]
    fn rolls_paths_up_below_their_mount() {
        let mp = Some("/mnt/ebs");
        assert_eq!(
            rollup("/mnt/ebs/worktrees/abc/x.lock", mp, 1),
            "/mnt/ebs/worktrees/*"
        );
        assert_eq!(
            rollup("/mnt/ebs/worktrees/abc/x.lock", mp, 2),
            "/mnt/ebs/worktrees/abc/*"
        );
        assert_eq!(
            rollup("/mnt/ebs/worktrees/abc/x.lock", mp, 5),
            "/mnt/ebs/worktrees/abc/*"
        );
        assert_eq!(rollup("/mnt/ebs/file", mp, 2), "/mnt/ebs/*");
        assert_eq!(rollup("/etc/passwd", Some("/"), 2), "/etc/*");
        assert_eq!(rollup("/etc/passwd", None, 0), "/*");
        assert_eq!(rollup("", mp, 2), "(unknown)");
        assert_eq!(rollup("rel/x", mp, 2), "(unknown)");
    }
}
