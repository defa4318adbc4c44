//! Space held by files that were deleted but are still open — the gap between `df` and `du`: a
//! bounded pass over `/proc/*/fd` (the node's processes: the observer runs with the node's pid
//! namespace), counting each such file once per filesystem and once per process that holds it.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
};

use serde::Serialize;

/// Most file descriptors looked at in one pass (a node with more is reported `truncated`).
pub const MAX_FDS: usize = 200_000;
/// Rows kept per table (filesystems and processes, the largest first).
pub const TOP: usize = 20;

/// Deleted-but-open space on one filesystem.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct HeldOnMount {
    /// Its mount point on the node (`(not mounted on the node)` for a container's own).
    pub mount: String,
    pub files: u64,
    /// Allocated bytes (`st_blocks * 512`: what `df` counts).
    pub bytes: u64,
}

/// Deleted-but-open space one process holds.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct HeldByProcess {
    pub pid: u32,
    pub comm: String,
    pub files: u64,
    pub bytes: u64,
}

/// One pass's result.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DeletedOpen {
    pub by_mount: Vec<HeldOnMount>,
    pub by_process: Vec<HeldByProcess>,
    pub fds_scanned: u64,
    /// The pass stopped at [`MAX_FDS`].
    pub truncated: bool,
}

/// One pass over `/proc` (not this process); `mount_of` names a kernel dev's mount point.
pub fn scan(mount_of: impl Fn(u32) -> Option<String>) -> DeletedOpen {
    let me = std::process::id();
    let mut out = DeletedOpen::default();
    let mut files_by_dev: HashMap<u64, HashSet<u64>> = HashMap::new();
    let mut bytes_by_dev: HashMap<u64, u64> = HashMap::new();
    let mut procs = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    'procs: for p in rd.filter_map(Result::ok) {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let mut mine: HashSet<(u64, u64)> = HashSet::new();
        let mut held = HeldByProcess {
            pid,
            ..Default::default()
        };
        for fd in fds.filter_map(Result::ok) {
            if out.fds_scanned as usize >= MAX_FDS {
                out.truncated = true;
                break 'procs;
            }
            out.fds_scanned += 1;
            let deleted = std::fs::read_link(fd.path())
                .is_ok_and(|l| l.as_os_str().as_encoded_bytes().ends_with(b" (deleted)"));
            if !deleted {
                continue;
            }
            // `metadata` follows the magic link to the open file itself; with a deadline (a
            // deleted file on a hung filesystem must not stop the passes).
            let Ok(m) = crate::node::fsio::metadata(&fd.path()) else {
                continue;
            };
            if !m.is_file() || m.nlink() != 0 || !mine.insert((m.dev(), m.ino())) {
                continue;
            }
            let bytes = m.blocks() * 512;
            held.files += 1;
            held.bytes += bytes;
            if files_by_dev.entry(m.dev()).or_default().insert(m.ino()) {
                *bytes_by_dev.entry(m.dev()).or_default() += bytes;
            }
        }
        if held.files > 0 {
            held.comm = std::fs::read_to_string(p.path().join("comm"))
                .map(|c| c.trim_end().to_string())
                .unwrap_or_default();
            procs.push(held);
        }
    }
    procs.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.pid.cmp(&b.pid)));
    procs.truncate(TOP);
    out.by_process = procs;
    let mut mounts: Vec<HeldOnMount> = files_by_dev
        .into_iter()
        .map(|(dev, files)| HeldOnMount {
            mount: mount_of(crate::node::kernel_dev(dev))
                .unwrap_or_else(|| "(not mounted on the node)".into()),
            files: files.len() as u64,
            bytes: bytes_by_dev.get(&dev).copied().unwrap_or(0),
        })
        .collect();
    // Filesystems the node does not name fold into one row (bounded labels).
    mounts.sort_by(|a, b| a.mount.cmp(&b.mount));
    mounts.dedup_by(|a, b| {
        let same = a.mount == b.mount;
        if same {
            b.files += a.files;
            b.bytes += a.bytes;
        }
        same
    });
    mounts.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.mount.cmp(&b.mount)));
    mounts.truncate(TOP);
    out.by_mount = mounts;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn a_deleted_file_held_open_by_a_child_is_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&[7u8; 1 << 20]).unwrap();
        f.sync_all().unwrap();
        // Another process holds it (this one is skipped), twice.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::fs::File::open(&path).unwrap())
            .stdout(std::fs::File::open(&path).unwrap())
            .spawn()
            .unwrap();
        drop(f);
        std::fs::remove_file(&path).unwrap();
        let got = scan(|_| Some("/the-mount".into()));
        let _: Result<_, _> = child.kill();
        let _: Result<_, _> = child.wait();
        let row = got
            .by_process
            .iter()
            .find(|p| p.pid == child.id())
            .unwrap_or_else(|| panic!("{got:?}"));
        assert_eq!((row.files, row.comm.as_str()), (1, "sleep"), "{got:?}");
        assert!(row.bytes >= 1 << 20, "{row:?}");
        let m = got
            .by_mount
            .iter()
            .find(|m| m.mount == "/the-mount")
            .unwrap();
        assert!(m.files >= 1 && m.bytes >= 1 << 20, "{m:?}");
        assert!(got.fds_scanned > 0 && !got.truncated);
    }
}
