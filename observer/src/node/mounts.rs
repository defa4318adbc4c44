//! Mount tables, keyed by kernel dev_t: the node's (what events, counters and configuration are
//! written in), this process's (where the observer opens files), or any mount namespace's (a
//! container's view). They name filesystems in counters and turn filesystem-relative paths into
//! absolute ones.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// How often a lookup miss may re-read the table.
const REFRESH_AFTER: Duration = Duration::from_secs(1);
const SELF_MOUNTINFO: &str = "/proc/self/mountinfo";
/// The `/proc` directory of a process in the node's mount namespace (set once at start).
static NODE_PROC: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Where the node's mount namespace is read from: `None`, this process's own (the observer runs
/// on the node, `system.node_root = "/"`); `Some(pid)`, that process's (in a container: the
/// node's init, which needs the node's pid namespace). Set once, before the tables are read.
pub fn set_node_process(pid: Option<u32>) {
    let dir = pid.map_or_else(|| "/proc/self".to_string(), |p| format!("/proc/{p}"));
    // Set once at start; a second call changes nothing.
    let _: Result<(), String> = NODE_PROC.set(dir);
}

/// The `/proc/PID` (or `/proc/self`) directory of a process in the node's mount namespace.
pub fn node_proc() -> &'static str {
    NODE_PROC.get().map_or("/proc/self", String::as_str)
}

/// Where a table was read from (it is re-read from there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// This process's mount namespace.
    Own,
    /// The node's ([`set_node_process`]).
    Node,
    /// Text given to [`MountTable::parse`]: never re-read.
    Text,
}
/// Largest mountinfo of this process or the node read (the node's own: its administrator's).
pub const MAX_MOUNTINFO_BYTES: u64 = 64 << 20;

#[derive(Clone, Debug)]
struct MountEntry {
    /// Path of the mount's root inside its filesystem (`/` unless a bind of a subdirectory).
    root: String,
    mount_point: String,
}

/// Tells when this mount namespace's table changed: the kernel flags an open
/// `/proc/self/mountinfo` with POLLPRI after every mount or unmount, once per change.
pub struct MountWatch(Option<std::fs::File>);

impl MountWatch {
    /// Watches the node's table.
    pub fn node() -> Self {
        Self(std::fs::File::open(format!("{}/mountinfo", node_proc())).ok())
    }

    /// True once after each change (a zero-timeout poll; false when it cannot tell).
    pub fn changed(&self) -> bool {
        self.wait(Duration::ZERO)
    }

    /// Waits up to `timeout` for a change: true once after each change, false when there was
    /// none by then (or the table cannot be watched: the caller then polls at its own pace).
    pub fn wait(&self, timeout: Duration) -> bool {
        use std::os::fd::AsRawFd as _;
        let Some(f) = &self.0 else {
            return false;
        };
        let mut p = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        n > 0 && p.revents & (libc::POLLPRI | libc::POLLERR) != 0
    }
}

pub struct MountTable {
    by_dev: HashMap<u32, Vec<MountEntry>>,
    /// Mount points, longest first (for the longest-prefix match of an absolute path).
    points: Vec<String>,
    /// The visible (last, topmost) mount at each mount point: dev and root.
    top: HashMap<String, (u32, String)>,
    loaded: Instant,
    source: Source,
}

/// Kernel dev_t encoding of a mountinfo `major:minor`.
pub(crate) fn parse_dev(s: &str) -> Option<u32> {
    let (maj, min) = s.split_once(':')?;
    Some((maj.parse::<u32>().ok()? << 20) | min.parse::<u32>().ok()?)
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Reads a mountinfo file of at most `max` bytes (`None` beyond, or unreadable). Names that
/// are not UTF-8 are kept lossily (they then match no configured path).
pub fn read_mountinfo(path: &str, max: u64) -> Option<String> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(max + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    (bytes.len() as u64 <= max).then(|| String::from_utf8_lossy(&bytes).into_owned())
}

/// Filesystem types never sampled for capacity when filesystems are found rather than listed:
/// pseudo filesystems and read-only images (always full).
pub const NOT_CAPACITY_FS_TYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "erofs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];

/// Mount points (and everything below them) never sampled when found: the kernel's own trees
/// and container runtimes' image layers.
const NOT_CAPACITY_POINTS: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/run/credentials",
    "/var/lib/docker/overlay2",
    "/var/lib/containers/storage",
    "/run/containers/storage",
    "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs",
];

/// Kubelet volumes that are small read-only tmpfs copies of API objects, one per pod.
const NOT_CAPACITY_VOLUMES: &[&str] = &[
    "/kubernetes.io~secret/",
    "/kubernetes.io~projected/",
    "/kubernetes.io~configmap/",
    "/kubernetes.io~downward-api/",
];

/// The real filesystems of a mountinfo text (block devices, network filesystems, tmpfs, FUSE):
/// one mount point per filesystem (its first), at most `max`, in table order.
pub fn real_filesystems(text: &str, max: usize) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let f: Vec<&str> = pre.split(' ').collect();
        let (Some(dev), Some(mp)) = (f.get(2).and_then(|d| parse_dev(d)), f.get(4)) else {
            continue;
        };
        let fstype = post.split(' ').next().unwrap_or("");
        let mp = unescape(mp);
        let under = |p: &&str| mp == *p || mp.strip_prefix(*p).is_some_and(|r| r.starts_with('/'));
        if fstype.is_empty()
            || NOT_CAPACITY_FS_TYPES.contains(&fstype)
            || NOT_CAPACITY_POINTS.iter().any(under)
            || NOT_CAPACITY_VOLUMES.iter().any(|v| mp.contains(v))
            || !seen.insert(dev)
        {
            continue;
        }
        out.push(mp);
        if out.len() >= max {
            break;
        }
    }
    out
}

/// Whether `here` (where this process opens a node path) is the node's own `node` path, checked
/// through the node's root: a node mount that did not propagate into this container would
/// otherwise be sampled as whatever lies under the mount point here.
pub fn reaches_node_path(here: &std::path::Path, node: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let on_node = format!("{}/root{}", node_proc(), node.display());
    let a = crate::node::fsio::metadata(std::path::Path::new(&on_node));
    let b = crate::node::fsio::metadata(here);
    matches!((a, b), (Ok(a), Ok(b)) if (a.dev(), a.ino()) == (b.dev(), b.ino()))
}

/// [`real_filesystems`] of the node's mount table.
pub fn node_real_filesystems(max: usize) -> Vec<String> {
    read_mountinfo(&format!("{}/mountinfo", node_proc()), MAX_MOUNTINFO_BYTES)
        .map(|t| real_filesystems(&t, max))
        .unwrap_or_default()
}

impl MountTable {
    /// This process's mount table (where the observer itself opens files).
    pub fn load() -> Self {
        Self::read(Source::Own)
    }

    /// The node's mount table (the view events, counters and configuration are written in).
    pub fn node() -> Self {
        Self::read(Source::Node)
    }

    fn read(source: Source) -> Self {
        let text = match source {
            Source::Own => read_mountinfo(SELF_MOUNTINFO, MAX_MOUNTINFO_BYTES),
            Source::Node => {
                read_mountinfo(&format!("{}/mountinfo", node_proc()), MAX_MOUNTINFO_BYTES)
            }
            Source::Text => None,
        };
        Self::parse(&text.unwrap_or_default(), source)
    }

    /// A table from the text of a mountinfo file.
    pub fn parse(text: &str, source: Source) -> Self {
        let mut by_dev: HashMap<u32, Vec<MountEntry>> = HashMap::new();
        let mut top = HashMap::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if let (Some(dev), Some(root), Some(mp)) =
                (f.get(2).and_then(|d| parse_dev(d)), f.get(3), f.get(4))
            {
                let e = MountEntry {
                    root: unescape(root),
                    mount_point: unescape(mp),
                };
                // Later lines are mounted over earlier ones at the same point.
                top.insert(e.mount_point.clone(), (dev, e.root.clone()));
                by_dev.entry(dev).or_default().push(e);
            }
        }
        let mut t = Self::from_map(by_dev);
        t.top = top;
        t.source = source;
        t
    }

    fn from_map(by_dev: HashMap<u32, Vec<MountEntry>>) -> Self {
        let mut points: Vec<String> = by_dev
            .values()
            .flatten()
            .map(|e| e.mount_point.clone())
            .collect();
        points.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        points.dedup();
        let top = by_dev
            .iter()
            .flat_map(|(d, es)| {
                es.iter()
                    .map(|e| (e.mount_point.clone(), (*d, e.root.clone())))
            })
            .collect();
        Self {
            by_dev,
            points,
            top,
            loaded: Instant::now(),
            source: Source::Own,
        }
    }

    /// Whether it holds no mount at all (it could not be read).
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Kernel dev_t of the filesystem mounted at `mount_point`.
    pub fn dev_of(&self, mount_point: &str) -> Option<u32> {
        self.by_dev
            .iter()
            .find(|(_, es)| es.iter().any(|e| e.mount_point == mount_point))
            .map(|(d, _)| *d)
    }

    /// The filesystem of an absolute path and the path inside it: the same file reached through
    /// two mounts (a bind mount) has the same key.
    pub fn fs_key(&self, path: &str) -> Option<(u32, String)> {
        let mp = self.mount_of(path)?;
        let (dev, root) = self.top.get(mp)?;
        let inside = path[mp.len().min(path.len())..].trim_start_matches('/');
        let root = root.trim_end_matches('/');
        Some((*dev, format!("{root}/{inside}")))
    }

    /// The mount point an absolute path lies under (longest prefix).
    pub fn mount_of(&self, path: &str) -> Option<&str> {
        self.points
            .iter()
            .find(|mp| {
                mp.as_str() == "/"
                    || path == mp.as_str()
                    || (path.starts_with(mp.as_str())
                        && path.as_bytes().get(mp.len()) == Some(&b'/'))
            })
            .map(String::as_str)
    }

    /// Where filesystem `dev` is mounted (a whole-filesystem mount preferred).
    pub fn mount_point(&self, dev: u32) -> Option<&str> {
        let entries = self.by_dev.get(&dev)?;
        entries
            .iter()
            .find(|e| e.root == "/")
            .or(entries.first())
            .map(|e| e.mount_point.as_str())
    }

    /// Absolute path of `rel` (a path from the root of filesystem `dev`).
    pub fn resolve(&mut self, dev: u32, rel: &str) -> Option<String> {
        if !self.by_dev.contains_key(&dev)
            && self.loaded.elapsed() > REFRESH_AFTER
            && self.source != Source::Text
        {
            *self = Self::read(self.source);
        }
        self.lookup(dev, rel)
    }

    /// Absolute path of `rel` (a path from the root of filesystem `dev`) in this table, without
    /// re-reading it: the mount whose root holds `rel`, a whole-filesystem mount first.
    pub fn lookup(&self, dev: u32, rel: &str) -> Option<String> {
        let entries = self.by_dev.get(&dev)?;
        let holds = |e: &&MountEntry| {
            rel.strip_prefix(e.root.as_str())
                .is_some_and(|r| r.is_empty() || r.starts_with('/'))
        };
        let e = entries
            .iter()
            .find(|e| e.root == "/")
            .or_else(|| entries.iter().find(holds))?;
        let inside = if e.root == "/" {
            rel
        } else {
            &rel[e.root.len()..]
        };
        let mp = e.mount_point.trim_end_matches('/');
        Some(format!("{mp}{inside}"))
    }
}

#[cfg(test)]
mod capacity_tests {
    #[test]
    fn real_filesystems_skip_pseudo_duplicates_and_pod_secrets() {
        let text = "\
22 1 259:2 / / rw - ext4 /dev/nvme0n1p2 rw
23 22 0:21 / /proc rw - proc proc rw
24 22 0:5 / /dev rw - devtmpfs udev rw
25 24 0:26 / /dev/shm rw - tmpfs tmpfs rw
26 22 0:27 / /run rw - tmpfs tmpfs rw
27 22 0:28 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
28 22 259:2 /var/lib/x /mnt/bind rw - ext4 /dev/nvme0n1p2 rw
29 22 0:40 / /var/lib/kubelet/pods/u/volumes/kubernetes.io~projected/kube-api rw - tmpfs tmpfs rw
30 22 0:41 / /var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/cache rw - tmpfs tmpfs rw
31 22 0:42 / /mnt/nfs rw - nfs4 srv:/export rw
32 22 0:43 / /var/lib/containers/storage/overlay/x/merged rw - overlay overlay rw
33 22 0:44 / /mnt/with\\040space rw - xfs /dev/sdb rw
";
        assert_eq!(
            super::real_filesystems(text, 64),
            [
                "/",
                "/run",
                "/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/cache",
                "/mnt/nfs",
                "/mnt/with space",
            ]
        );
        assert_eq!(super::real_filesystems(text, 2), ["/", "/run"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_paths_through_mount_points() {
        let mut t = MountTable::from_map(HashMap::from([
            (
                (8 << 20) | 1,
                vec![MountEntry {
                    root: "/".into(),
                    mount_point: "/mnt/data".into(),
                }],
            ),
            (
                52,
                vec![MountEntry {
                    root: "/sub".into(),
                    mount_point: "/srv/x".into(),
                }],
            ),
        ]));
        assert_eq!(
            t.resolve((8 << 20) | 1, "/a/b").as_deref(),
            Some("/mnt/data/a/b")
        );
        assert_eq!(t.resolve(52, "/sub/f").as_deref(), Some("/srv/x/f"));
        assert_eq!(t.resolve(52, "/other/f"), None);
        assert_eq!(t.mount_point((8 << 20) | 1), Some("/mnt/data"));
        assert_eq!(t.mount_of("/mnt/data/a"), Some("/mnt/data"));
        assert_eq!(t.mount_of("/mnt/database/a"), None);
        assert_eq!(t.mount_of("/srv/x"), Some("/srv/x"));
        assert_eq!(t.dev_of("/srv/x"), Some(52));
        assert_eq!(t.fs_key("/srv/x/a/b"), Some((52, "/sub/a/b".into())));
        assert_eq!(t.fs_key("/mnt/data/f"), Some(((8 << 20) | 1, "/f".into())));
        assert_eq!(parse_dev("0:52"), Some(52));
        // Two filesystems mounted at one point: the later one is the visible one.
        let stacked = MountTable::parse(
            "1 0 8:1 / / rw - ext4 a rw\n2 1 0:60 / /data rw - tmpfs t rw\n3 1 0:61 /x /data rw - tmpfs u rw\n",
            Source::Text,
        );
        assert_eq!(stacked.fs_key("/data/f"), Some((61, "/x/f".into())));
        assert_eq!(parse_dev("8:1"), Some((8 << 20) | 1));
    }
}
