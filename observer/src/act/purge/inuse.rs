//! What makes an entry "in use": a live process's open file or cwd inside it (`/proc/*/fd`,
//! `/proc/*/cwd`), a flock/OFD/POSIX lock on something inside it (`/proc/locks`), a mount point
//! inside it (`/proc/self/mountinfo`), or an owner that is still alive (a pid written in a
//! lock/pid file, or the holder the lock guard tracks).

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

/// `(st_dev, st_ino)` as `stat` reports them.
pub type Inode = (u64, u64);

/// Snapshot of the node's open files, cwds, file locks and mount points.
#[derive(Debug, Default)]
pub struct InUse {
    pub open: HashSet<Inode>,
    pub locked: HashSet<Inode>,
    pub mount_points: Vec<PathBuf>,
    /// Absolute paths of locks whose holder the lock guard knows to be alive.
    pub live_lock_paths: Vec<String>,
}

impl InUse {
    /// Scans `/proc` (skipping this process) for inodes on `dev` only.
    pub fn scan(devs: &[u64], live_lock_paths: Vec<String>) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        let me = std::process::id().to_string();
        let mut open = HashSet::new();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let name = p.file_name();
                let Some(pid) = name.to_str() else { continue };
                if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
                    continue;
                }
                let base = p.path();
                let mut add = |path: &Path| {
                    // `metadata` follows the magic link to the open file itself.
                    if let Ok(m) = std::fs::metadata(path)
                        && devs.contains(&m.dev())
                    {
                        open.insert((m.dev(), m.ino()));
                    }
                };
                add(&base.join("cwd"));
                if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
                    for fd in fds.flatten() {
                        add(&fd.path());
                    }
                }
            }
        }
        let locked = std::fs::read_to_string("/proc/locks")
            .map(|t| parse_locks(&t))
            .unwrap_or_default();
        Self {
            open,
            locked,
            mount_points: mount_points(),
            live_lock_paths,
        }
    }

    /// Whether a mount point lies at or below `abs`.
    pub fn mount_below(&self, abs: &Path) -> bool {
        self.mount_points.iter().any(|m| m.starts_with(abs))
    }

    /// A live lock-guard holder's lock at or below `abs`.
    pub fn live_lock_below(&self, abs: &Path) -> Option<&str> {
        self.live_lock_paths
            .iter()
            .find(|l| Path::new(l).starts_with(abs))
            .map(String::as_str)
    }
}

/// `(dev, ino)` of every lock in `/proc/locks` (`1: FLOCK ADVISORY WRITE 42 00:1b:1234 0 EOF`,
/// blocked waiters have an extra `->`). Major and minor are hex.
pub fn parse_locks(text: &str) -> HashSet<Inode> {
    let mut out = HashSet::new();
    for line in text.lines() {
        let Some(field) = line
            .split_whitespace()
            .find(|w| w.matches(':').count() == 2)
        else {
            continue;
        };
        let mut it = field.split(':');
        let (Some(maj), Some(min), Some(ino)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if let (Ok(maj), Ok(min), Ok(ino)) = (
            u32::from_str_radix(maj, 16),
            u32::from_str_radix(min, 16),
            ino.parse::<u64>(),
        ) {
            out.insert((libc::makedev(maj, min), ino));
        }
    }
    out
}

/// Mount points of this mount namespace (field 5 of `/proc/self/mountinfo`, octal escapes
/// decoded).
fn mount_points() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines_are_parsed() {
        let t = "1: FLOCK  ADVISORY  WRITE 42 00:1b:1234 0 EOF\n\
                 1: -> FLOCK  ADVISORY  WRITE 43 00:1b:1234 0 EOF\n\
                 2: OFDLCK ADVISORY  READ  -1 fd:01:99 0 EOF\n";
        let s = parse_locks(t);
        assert!(s.contains(&(libc::makedev(0, 0x1b), 1234)));
        assert!(s.contains(&(libc::makedev(0xfd, 1), 99)));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
    }
}
