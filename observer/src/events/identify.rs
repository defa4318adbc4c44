//! Process identity for aggregation: tgid + start time (pid-reuse safe), comm, exe, and the
//! container / pod it runs in, parsed from its cgroup path and the node's `/var/log/pods`.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use serde::Serialize;

/// How long a cached identity is trusted before its start time is re-checked.
const REVALIDATE_AFTER: Duration = Duration::from_secs(2);
/// How often a pod-UID miss may re-list the pods log directory.
const PODS_RELIST_AFTER: Duration = Duration::from_secs(10);

/// Who a process is. `start_time` is in clock ticks since boot (`/proc/PID/stat` field 22);
/// 0 when the process was gone before it could be read.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq, Hash)]
pub struct ProcIdentity {
    pub pid: u32,
    pub start_time: u64,
    pub comm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    #[serde(flatten)]
    pub workload: Workload,
    /// `workload.label()`, computed once.
    #[serde(skip)]
    pub workload_label: String,
}

/// Container and pod of a process, when it runs in one.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq, Hash)]
pub struct Workload {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// The process was gone and nothing else placed it (its cgroup, a process in its mount
    /// namespace): not known to be a host process.
    #[serde(skip)]
    pub unplaced: bool,
}

impl Workload {
    /// A short, bounded-cardinality name for metrics and columns: `ns/pod`, else the first 12
    /// characters of the container id, else `host` (`unknown` when it could not be placed).
    pub fn label(&self) -> String {
        match (&self.pod_namespace, &self.pod_name, &self.container_id) {
            (Some(ns), Some(name), _) => format!("{ns}/{name}"),
            (_, _, Some(id)) => id.chars().take(12).collect(),
            _ if self.unplaced => "unknown".into(),
            _ => "host".into(),
        }
    }
}

/// Container id and pod UID from the text of `/proc/PID/cgroup` (v2 `0::/path` and v1
/// `N:controllers:/path` lines; containerd, CRI-O and docker, systemd and cgroupfs drivers).
pub fn parse_cgroup(text: &str) -> Workload {
    let mut w = Workload::default();
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        for seg in path.split('/') {
            if w.pod_uid.is_none() {
                w.pod_uid = pod_uid_of(seg);
            }
            if let Some(id) = container_id_of(seg) {
                w.container_id = Some(id);
            }
        }
        if w.container_id.is_some() {
            break;
        }
    }
    w
}

/// `kubepods-burstable-pod<uid with _>.slice` or `pod<uid>` -> the pod UID (with dashes).
fn pod_uid_of(seg: &str) -> Option<String> {
    let seg = seg.strip_suffix(".slice").unwrap_or(seg);
    let at = seg.rfind("pod")?;
    let uid = seg[at + 3..].replace('_', "-");
    let ok = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| {
            matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
        });
    ok.then_some(uid)
}

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope` or a bare `<id>`
/// (64 hex digits) -> the container id.
fn container_id_of(seg: &str) -> Option<String> {
    let seg = seg.strip_suffix(".scope").unwrap_or(seg);
    let id = seg.rsplit('-').next()?;
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
}

/// Start time (clock ticks after boot) from the text of `/proc/PID/stat`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    // comm may contain spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

struct Cached {
    identity: std::sync::Arc<ProcIdentity>,
    checked: Instant,
}

/// Identities by tgid, re-validated against the start time so a reused pid becomes a new
/// process. Bounded: cleared when it exceeds `max` entries (entries are cheap to re-read).
pub struct ProcTable {
    cache: HashMap<u32, Cached>,
    max: usize,
    pods_dir: PathBuf,
    pods: HashMap<String, (String, String)>,
    pods_listed: Option<Instant>,
    cgroups: crate::node::cgroups::CgroupResolver,
}

impl ProcTable {
    pub fn new(max: usize, pods_dir: PathBuf) -> Self {
        Self {
            cache: HashMap::new(),
            max: max.max(16),
            pods_dir,
            pods: HashMap::new(),
            pods_listed: None,
            cgroups: crate::node::cgroups::CgroupResolver::open(),
        }
    }

    /// The identity of `pid` (whose comm and cgroup the kernel reported; `peer`: a live process
    /// in its mount namespace when that is not the node's) as of `now` (the caller's clock
    /// reading, taken once per batch of events).
    pub fn get(
        &mut self,
        pid: u32,
        comm: &str,
        cgroup_id: u64,
        peer: Option<u32>,
        now: Instant,
    ) -> &std::sync::Arc<ProcIdentity> {
        let fresh = match self.cache.get(&pid) {
            Some(c) if now.saturating_duration_since(c.checked) < REVALIDATE_AFTER => false,
            Some(c) => {
                match read_start_time(pid) {
                    Some(t) if t == c.identity.start_time => {
                        // Same process: only the timestamp needs refreshing.
                        if let Some(c) = self.cache.get_mut(&pid) {
                            c.checked = now;
                        }
                        false
                    }
                    None => false, // gone: keep what we knew
                    Some(_) => true,
                }
            }
            None => true,
        };
        if fresh {
            if self.cache.len() >= self.max {
                self.cache.clear();
            }
            let identity = std::sync::Arc::new(self.read(pid, comm, cgroup_id, peer));
            self.cache.insert(
                pid,
                Cached {
                    identity,
                    checked: now,
                },
            );
        }
        &self.cache[&pid].identity
    }

    fn read(&mut self, pid: u32, comm: &str, cgroup_id: u64, peer: Option<u32>) -> ProcIdentity {
        let start_time = read_start_time(pid).unwrap_or(0);
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.display().to_string());
        // The cgroup the kernel saw it in (the node's cgroup2 hierarchy), else what its /proc
        // entry says, else — gone — a live process of its mount namespace (its container's).
        let cgroup = |p: u32| std::fs::read_to_string(format!("/proc/{p}/cgroup")).ok();
        let text = self
            .cgroups
            .path_of(cgroup_id)
            .map(|p| format!("0::{p}"))
            .or_else(|| cgroup(pid))
            .or_else(|| cgroup(peer?));
        let mut workload = text.as_deref().map(parse_cgroup).unwrap_or_default();
        workload.unplaced = text.is_none();
        if let Some(uid) = workload.pod_uid.clone()
            && let Some((ns, name)) = self.pod_name(&uid)
        {
            workload.pod_namespace = Some(ns);
            workload.pod_name = Some(name);
        }
        ProcIdentity {
            pid,
            start_time,
            comm: comm.to_string(),
            exe,
            workload_label: workload.label(),
            workload,
        }
    }

    /// Namespace and name of pod `uid` from `<pods_dir>/<ns>_<name>_<uid>`.
    fn pod_name(&mut self, uid: &str) -> Option<(String, String)> {
        if !self.pods.contains_key(uid)
            && self
                .pods_listed
                .is_none_or(|t| t.elapsed() > PODS_RELIST_AFTER)
        {
            self.pods_listed = Some(Instant::now());
            self.pods = list_pods(&self.pods_dir);
        }
        self.pods.get(uid).cloned()
    }
}

fn read_start_time(pid: u32) -> Option<u64> {
    parse_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `<ns>_<name>_<uid>` directory names -> uid -> (ns, name). Namespaces and pod names cannot
/// contain `_`, so the split is unambiguous.
pub fn list_pods(dir: &std::path::Path) -> HashMap<String, (String, String)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return HashMap::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let mut parts = name.splitn(3, '_');
            let (ns, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
            Some((uid.to_string(), (ns.to_string(), pod.to_string())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "12345678-9abc-def0-1234-56789abcdef0";

    #[test]
    fn parses_containerd_systemd_v2() {
        let t = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope\n",
            UID.replace('-', "_")
        );
        let w = parse_cgroup(&t);
        assert_eq!(w.container_id.as_deref(), Some(ID));
        assert_eq!(w.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn parses_crio_docker_and_cgroupfs_v1() {
        let crio = format!(
            "0::/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope",
            UID.replace('-', "_")
        );
        assert_eq!(parse_cgroup(&crio).container_id.as_deref(), Some(ID));
        let docker = format!("0::/system.slice/docker-{ID}.scope");
        let w = parse_cgroup(&docker);
        assert_eq!(w.container_id.as_deref(), Some(ID));
        assert_eq!(w.pod_uid, None);
        let v1 = format!(
            "12:pids:/kubepods/besteffort/pod{UID}/{ID}\n11:memory:/kubepods/besteffort/pod{UID}/{ID}\n"
        );
        let w = parse_cgroup(&v1);
        assert_eq!(w.container_id.as_deref(), Some(ID));
        assert_eq!(w.pod_uid.as_deref(), Some(UID));
        assert_eq!(w.label(), &ID[..12]);
    }

    #[test]
    fn parses_podman_cgroupfs_in_hybrid_mode() {
        // podman with runc and the cgroupfs manager on a hybrid host: v1 controllers and the
        // unified (0::) line all name the libpod cgroup.
        let t = format!(
            "12:pids:/libpod_parent/libpod-{ID}\n1:name=systemd:/libpod_parent/libpod-{ID}\n0::/libpod_parent/libpod-{ID}\n"
        );
        let w = parse_cgroup(&t);
        assert_eq!(w.container_id.as_deref(), Some(ID));
        assert_eq!(w.pod_uid, None);
        // Plain containerd (`ctr run`): the namespace, then the bare id.
        let w = parse_cgroup(&format!("0::/default/{ID}\n"));
        assert_eq!(w.container_id.as_deref(), Some(ID));
        // Its conmon is not a container.
        assert_eq!(
            parse_cgroup("0::/libpod_parent/conmon\n"),
            Workload::default()
        );
    }

    #[test]
    fn host_processes_have_no_workload() {
        let w = parse_cgroup("0::/user.slice/user-0.slice/session-3.scope\n");
        assert_eq!(w, Workload::default());
        assert_eq!(w.label(), "host");
        assert_eq!(parse_cgroup("garbage"), Workload::default());
    }

    #[test]
    fn start_time_survives_odd_comms() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("nonsense"), None);
    }

    #[test]
    fn pod_names_come_from_log_dirs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join(format!("ci_runner-7_{UID}"))).unwrap();
        let pods = list_pods(d.path());
        assert_eq!(pods[UID], ("ci".to_string(), "runner-7".to_string()));
    }
}
