//! Stage 4 — aggregate: decoded events into bounded per-path-prefix, per-process and
//! per-workload counters, plus filesystem capacity (time-to-full). Memory is bounded by the
//! configured table sizes; evicted keys fold into an "other" bucket so totals stay exact.

pub mod capacity;
pub mod leak;
pub mod procs;
pub mod table;

use serde::Serialize;

use crate::decode::SyscallRecord;
use leak::{LeakConfig, LeakDetector};
use procs::{ProcIdentity, ProcTable};
use table::{Bounded, Counts, Merge};

/// Sizes and rollup depth (`[aggregate]` in the config).
#[derive(Clone, Debug)]
pub struct Limits {
    pub path_depth: usize,
    pub max_paths: usize,
    pub max_processes: usize,
    pub max_workloads: usize,
    pub pods_dir: std::path::PathBuf,
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
    ident: ProcTable,
    pub leaks: LeakDetector,
    /// Events aggregated.
    pub events: u64,
}

/// `path` rolled up to `depth` directory levels below its mount point, as `<prefix>/*`
/// ("this directory and everything below it"). The file name itself never becomes a key.
pub fn rollup(path: &str, mount_point: Option<&str>, depth: usize) -> String {
    if !path.starts_with('/') {
        return "(unknown)".into();
    }
    let mp = mount_point.unwrap_or("/").trim_end_matches('/');
    let rest = path.strip_prefix(mp).unwrap_or(path);
    let comps: Vec<&str> = rest.split('/').filter(|c| !c.is_empty()).collect();
    // The last component is the file (or the directory) the call named: roll up its parent.
    let dirs = &comps[..comps.len().saturating_sub(1)];
    let mut key = String::from(mp);
    for c in dirs.iter().take(depth) {
        key.push('/');
        key.push_str(c);
    }
    key.push_str("/*");
    key
}

impl Aggregator {
    pub fn new(limits: Limits) -> Self {
        Self {
            paths: Bounded::new(limits.max_paths),
            procs: Bounded::new(limits.max_processes),
            workloads: Bounded::new(limits.max_workloads),
            ident: ProcTable::new(limits.max_processes * 2, limits.pods_dir.clone()),
            leaks: LeakDetector::new(limits.leak.clone(), limits.max_paths),
            limits,
            events: 0,
        }
    }

    /// The identity of the process that made `r` (cached; see [`ProcTable`]).
    pub fn identify(&mut self, r: &SyscallRecord) -> std::sync::Arc<ProcIdentity> {
        self.ident.get(r.tgid, &r.comm).clone()
    }

    /// Adds one decoded event, made by `who`, whose path is on `mount_point`.
    pub fn observe(&mut self, r: &SyscallRecord, who: &ProcIdentity, mount_point: Option<&str>) {
        self.events += 1;
        let delta = delta_of(r);
        let key = rollup(&r.path, mount_point, self.limits.path_depth);
        if self.leaks.enabled() && r.errno == 0 {
            match r.kind() {
                "create" => self.leaks.created(&key, who.pid, &who.comm),
                "delete" => self.leaks.deleted(&key),
                _ => {}
            }
        }
        self.paths.entry(&key).merge(&delta);
        let e = self.procs.entry(&(who.pid, who.start_time));
        if e.identity.pid == 0 {
            e.identity = who.clone();
        }
        e.counts.merge(&delta);
        self.workloads.entry(&who.workload_label).merge(&delta);
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

/// What one event adds.
fn delta_of(r: &SyscallRecord) -> Counts {
    let mut c = Counts::default();
    match r.kind() {
        "heartbeat" if r.errno == 0 => c.heartbeats_ok = 1,
        "heartbeat" => c.heartbeats_failed = 1,
        "delete" if r.errno == 0 => c.deletes = 1,
        "create" => c.creates = 1,
        _ => {}
    }
    if r.errno != 0 {
        c.errors
            .entry(crate::errno::name_static(r.errno).into_owned())
            .or_default()
            .insert(r.syscall_name(), 1);
        if observer_common::syscall::is_write_family(r.syscall) {
            c.bytes_failed = r.count;
        }
    }
    c
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
    use super::rollup;

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
