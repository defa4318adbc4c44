//! Mount table of this mount namespace, keyed by kernel dev_t: names filesystems in counters and
//! turns filesystem-relative paths (fexit on dentry-only VFS functions) into absolute ones.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// How often a lookup miss may re-read /proc/self/mountinfo.
const REFRESH_AFTER: Duration = Duration::from_secs(1);

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
    pub fn new() -> Self {
        Self(std::fs::File::open("/proc/self/mountinfo").ok())
    }

    /// True once after each change (a zero-timeout poll; false when it cannot tell).
    pub fn changed(&self) -> bool {
        use std::os::fd::AsRawFd as _;
        let Some(f) = &self.0 else {
            return false;
        };
        let mut p = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no timeout.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents & (libc::POLLPRI | libc::POLLERR) != 0
    }
}

pub struct MountTable {
    by_dev: HashMap<u32, Vec<MountEntry>>,
    /// Mount points, longest first (for the longest-prefix match of an absolute path).
    points: Vec<String>,
    loaded: Instant,
}

/// Kernel dev_t encoding of a mountinfo `major:minor`.
fn parse_dev(s: &str) -> Option<u32> {
    let (maj, min) = s.split_once(':')?;
    Some((maj.parse::<u32>().ok()? << 20) | min.parse::<u32>().ok()?)
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

impl MountTable {
    pub fn load() -> Self {
        let mut by_dev: HashMap<u32, Vec<MountEntry>> = HashMap::new();
        if let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") {
            for line in text.lines() {
                let f: Vec<&str> = line.split(' ').collect();
                if let (Some(dev), Some(root), Some(mp)) =
                    (f.get(2).and_then(|d| parse_dev(d)), f.get(3), f.get(4))
                {
                    by_dev.entry(dev).or_default().push(MountEntry {
                        root: unescape(root),
                        mount_point: unescape(mp),
                    });
                }
            }
        }
        Self::from_map(by_dev)
    }

    fn from_map(by_dev: HashMap<u32, Vec<MountEntry>>) -> Self {
        let mut points: Vec<String> = by_dev
            .values()
            .flatten()
            .map(|e| e.mount_point.clone())
            .collect();
        points.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        points.dedup();
        Self {
            by_dev,
            points,
            loaded: Instant::now(),
        }
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
        let (dev, e) = self
            .by_dev
            .iter()
            .find_map(|(d, es)| Some((*d, es.iter().find(|e| e.mount_point == mp)?)))?;
        let inside = path[mp.len().min(path.len())..].trim_start_matches('/');
        let root = e.root.trim_end_matches('/');
        Some((dev, format!("{root}/{inside}")))
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
        if !self.by_dev.contains_key(&dev) && self.loaded.elapsed() > REFRESH_AFTER {
            *self = Self::load();
        }
        let entries = self.by_dev.get(&dev)?;
        let e = entries
            .iter()
            .find(|e| e.root == "/" || rel.starts_with(&format!("{}/", e.root)))?;
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
        assert_eq!(parse_dev("8:1"), Some((8 << 20) | 1));
    }
}
