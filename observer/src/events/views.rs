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
use observer_common::event::PATH_HAS_TAIL;

/// How long a namespace's table is used before it is read again.
const TABLE_FRESH: Duration = Duration::from_secs(2);
/// Most namespaces whose tables are kept (cleared when full; re-read on demand).
const MAX_NAMESPACES: usize = 512;
/// Largest mountinfo read for one namespace (a container's is a few KiB; one that copies many
/// node mounts, a few hundred).
const MAX_TABLE_BYTES: u64 = 1 << 20;
/// Bytes of mountinfo text the kept tables may come from, together (cleared beyond).
const MAX_KEPT_BYTES: u64 = 32 << 20;
/// Most namespace tables read per second: any process can make mount namespaces, and the
/// events stage must keep up with the ring. Beyond it, records stay in the caller's view.
const READS_PER_SECOND: u32 = 64;
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

/// The node's mount namespace, through `system.node_pid`'s process (`None`: unreadable).
pub fn node_namespace() -> Option<u32> {
    ns_at(node_proc())
}

struct NsTable {
    table: Option<MountTable>,
    /// Length of the mountinfo text it was parsed from.
    bytes: u64,
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
    kept_bytes: u64,
    /// Table reads in the current second: (second started, reads).
    reads: (Option<Instant>, u32),
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
            kept_bytes: 0,
            reads: (None, 0),
            scanned: None,
            counts: ViewCounts::default(),
        }
    }

    /// Puts `r`'s path in the node's view (`node`: the node's mount table). Fails closed: a
    /// record whose namespace the kernel could not read, a path cut short or typed with `.`/`..`,
    /// or a filesystem that does not match the one the kernel saw, stays in the caller's view.
    pub fn place(&mut self, r: &mut SyscallRecord, node: &MountTable, now: Instant) {
        let ns = r.mnt_ns;
        if r.path.is_empty() || self.node_ns == 0 || (ns != 0 && ns == self.node_ns) {
            return;
        }
        let translatable =
            ns != 0 && r.path.starts_with('/') && r.path_complete() && !has_dot_components(&r.path);
        // fd-based records name their file's filesystem: the caller's table must agree.
        let kernel_dev = (r.dev != 0 && r.path_flags & PATH_HAS_TAIL == 0).then_some(r.dev);
        let mut hostpath = None;
        if translatable {
            for attempt in 0..2 {
                let key = self
                    .table(ns, r.tgid, now, attempt > 0)
                    .and_then(|t| t.fs_key(&r.path));
                match key {
                    Some((dev, _)) if kernel_dev.is_some_and(|k| k != dev) => continue,
                    Some((dev, inside)) => hostpath = node.lookup(dev, &inside),
                    None => {}
                }
                break;
            }
        }
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
        // Re-checked: the pid may have been reused since the table was read.
        self.tables
            .get(&ns)
            .map(|t| t.pid)
            .filter(|p| *p != 0 && ns_of(&p.to_string()) == Some(ns))
    }

    /// The mount table of namespace `ns`, read through `caller` or any process still in it
    /// (again when `reread`, e.g. after a mount changed it).
    fn table(&mut self, ns: u32, caller: u32, now: Instant, reread: bool) -> Option<&MountTable> {
        let fresh = self
            .tables
            .get(&ns)
            .is_some_and(|t| now.saturating_duration_since(t.loaded) < TABLE_FRESH);
        if (!fresh || reread) && self.may_read(now) {
            let known = self.tables.get(&ns).map(|t| t.pid);
            let pid = [Some(caller), known]
                .into_iter()
                .flatten()
                .find(|p| ns_of(&p.to_string()) == Some(ns))
                .or_else(|| self.scan(ns, now));
            // Read, then checked again: the process may have changed namespace meanwhile.
            let text = pid
                .and_then(|p| read_mountinfo(&format!("/proc/{p}/mountinfo"), MAX_TABLE_BYTES))
                .filter(|_| pid.is_some_and(|p| ns_of(&p.to_string()) == Some(ns)));
            let bytes = text.as_ref().map_or(0, |t| t.len() as u64);
            if let Some(old) = self.tables.remove(&ns) {
                self.kept_bytes -= old.bytes;
            }
            if self.tables.len() >= MAX_NAMESPACES || self.kept_bytes + bytes > MAX_KEPT_BYTES {
                self.tables.clear();
                self.kept_bytes = 0;
            }
            self.kept_bytes += bytes;
            self.tables.insert(
                ns,
                NsTable {
                    table: text.map(|t| MountTable::parse(&t, Source::Text)),
                    bytes,
                    pid: pid.unwrap_or(0),
                    loaded: now,
                },
            );
        }
        self.tables.get(&ns)?.table.as_ref()
    }

    /// Whether another table may be read this second ([`READS_PER_SECOND`]).
    fn may_read(&mut self, now: Instant) -> bool {
        match self.reads.0 {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(1) => {
                self.reads.1 += 1;
                self.reads.1 <= READS_PER_SECOND
            }
            _ => {
                self.reads = (Some(now), 1);
                true
            }
        }
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
