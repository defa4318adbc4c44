//! One path vocabulary: every record's path put in the node's view. The kernel walks a path to
//! the root of the caller's mount namespace, so a container's write to `/data/x` arrives as
//! `/data/x`; here it becomes the node's name for the same file (through the filesystem and the
//! path inside it, in the caller's mount table and then the node's), and the caller's view is
//! kept beside it. When that cannot be done — the caller's table is gone, the node has no mount of
//! that filesystem, the path has `.`/`..` components as the caller typed them — the record says
//! so ([`PathView::Caller`]) and node configuration never matches it.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::decode::{PathView, SyscallRecord};
use crate::node::mounts::{MountTable, Source, node_proc, read_mountinfo};

/// How long a namespace's table is used before it is read again.
const TABLE_FRESH: Duration = Duration::from_secs(2);
/// Most namespaces whose tables are kept (cleared when full; re-read on demand).
const MAX_NAMESPACES: usize = 512;
/// How often `/proc` may be scanned for a process in a namespace none of whose callers is left.
const SCAN_EVERY: Duration = Duration::from_secs(1);

/// What this stage counts (exported as metrics).
#[derive(Debug, Default, Clone, Copy)]
pub struct ViewCounts {
    /// Records from another mount namespace put in the node's view.
    pub translated: u64,
    /// Records left in the caller's view.
    pub untranslated: u64,
}

struct NsTable {
    table: Option<MountTable>,
    /// A process in the namespace (re-checked before use).
    pid: u32,
    loaded: Instant,
}

/// Mount-namespace tables and the translation into the node's view.
pub struct Views {
    /// The node's mount namespace (0 when unreadable: then every record is taken as the
    /// node's, and the start logs why).
    node_ns: u32,
    tables: HashMap<u32, NsTable>,
    scanned: Option<Instant>,
    pub counts: ViewCounts,
}

/// The mount namespace of process `pid` (a number or `self`): the inode in `/proc/PID/ns/mnt`'s
/// link text (`mnt:[4026531841]`; reading the link needs less than following it).
fn ns_of(pid: &str) -> Option<u32> {
    ns_at(&format!("/proc/{pid}"))
}

fn ns_at(proc_dir: &str) -> Option<u32> {
    let link = std::fs::read_link(format!("{proc_dir}/ns/mnt")).ok()?;
    link.to_str()?
        .strip_prefix("mnt:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

impl Views {
    /// Reads the node's mount namespace.
    pub fn read() -> Self {
        Self {
            node_ns: ns_at(node_proc()).unwrap_or_else(|| {
                tracing::warn!(
                    proc = node_proc(),
                    "cannot read the node's mount namespace: paths from containers are not translated"
                );
                0
            }),
            tables: HashMap::new(),
            scanned: None,
            counts: ViewCounts::default(),
        }
    }

    /// Puts `r`'s path in the node's view (`node`: the node's mount table).
    pub fn place(&mut self, r: &mut SyscallRecord, node: &MountTable, now: Instant) {
        let ns = r.mnt_ns;
        if r.path.is_empty() || ns == 0 || self.node_ns == 0 || ns == self.node_ns {
            return;
        }
        let hostpath = if has_dot_components(&r.path) {
            None
        } else {
            self.table(ns, r.tgid, now)
                .and_then(|t| t.fs_key(&r.path))
                .and_then(|(dev, inside)| node.lookup(dev, &inside))
        };
        match hostpath {
            Some(p) => {
                self.counts.translated += 1;
                if p != r.path {
                    r.seen_as = Some(std::mem::replace(&mut r.path, p));
                }
            }
            None => {
                self.counts.untranslated += 1;
                r.view = PathView::Caller;
            }
        }
    }

    /// A live process of mount namespace `ns` (one its table was read through), when that is
    /// not the node's: it places a caller that is gone in the same container.
    pub fn peer(&self, ns: u32) -> Option<u32> {
        if ns == 0 || ns == self.node_ns {
            return None;
        }
        self.tables.get(&ns).map(|t| t.pid).filter(|p| *p != 0)
    }

    /// The mount table of namespace `ns`, read through `caller` or any process still in it.
    fn table(&mut self, ns: u32, caller: u32, now: Instant) -> Option<&MountTable> {
        let fresh = self
            .tables
            .get(&ns)
            .is_some_and(|t| now.saturating_duration_since(t.loaded) < TABLE_FRESH);
        if !fresh {
            let known = self.tables.get(&ns).map(|t| t.pid);
            let pid = [Some(caller), known]
                .into_iter()
                .flatten()
                .find(|p| ns_of(&p.to_string()) == Some(ns))
                .or_else(|| self.scan(ns, now));
            let table = pid.and_then(|p| read_mountinfo(&format!("/proc/{p}/mountinfo")));
            if self.tables.len() >= MAX_NAMESPACES && !self.tables.contains_key(&ns) {
                self.tables.clear();
            }
            self.tables.insert(
                ns,
                NsTable {
                    table: table.map(|t| MountTable::parse(&t, Source::Text)),
                    pid: pid.unwrap_or(0),
                    loaded: now,
                },
            );
        }
        self.tables.get(&ns)?.table.as_ref()
    }

    /// A process in namespace `ns`, from one pass over `/proc` (at most once a second).
    fn scan(&mut self, ns: u32, now: Instant) -> Option<u32> {
        if self
            .scanned
            .is_some_and(|t| now.saturating_duration_since(t) < SCAN_EVERY)
        {
            return None;
        }
        self.scanned = Some(now);
        std::fs::read_dir("/proc")
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|p| ns_of(&p.to_string()) == Some(ns))
    }
}

/// A `.` or `..` component (a name as the caller typed it): its place cannot be known from the
/// text alone.
fn has_dot_components(path: &str) -> bool {
    path.split('/').any(|c| c == "." || c == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_components_are_not_translated() {
        assert!(has_dot_components("/data/../etc/x"));
        assert!(has_dot_components("/data/./x"));
        assert!(!has_dot_components("/data/..x/.y"));
    }

    #[test]
    fn a_container_path_becomes_the_nodes() {
        // The caller's namespace: its volume (tmpfs 0:70, a subdirectory) at /data.
        let caller = MountTable::parse(
            "1 0 0:60 / / rw - overlay overlay rw\n2 1 0:70 /vols/a /data rw - tmpfs t rw\n",
            Source::Text,
        );
        let node = MountTable::parse(
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n5 1 0:70 / /var/lib/vols rw - tmpfs t rw\n",
            Source::Text,
        );
        let (dev, inside) = caller.fs_key("/data/x.lock").unwrap();
        assert_eq!((dev, inside.as_str()), (70, "/vols/a/x.lock"));
        assert_eq!(
            node.lookup(dev, &inside).as_deref(),
            Some("/var/lib/vols/vols/a/x.lock")
        );
        // The node has no mount of the container's root filesystem.
        let (dev, inside) = caller.fs_key("/etc/x").unwrap();
        assert_eq!(node.lookup(dev, &inside), None);
    }
}
