//! How many bytes a directory tree holds — `du`, bounded and safe on trees hostile processes
//! made: everything is opened beneath the tree's root through [`crate::node::beneath`] (no
//! symlink followed, no mount entered), at most `budget` entries are looked at (the figure then
//! says it is a lower bound), depth is bounded, and a file with several links counts once.
//! Bytes are allocated bytes (`st_blocks` × 512: what fills a disk, sparse files as they are).
//! Each directory's own bytes (its files and its own blocks) are kept per directory, keyed like
//! the kernel keys directories, so the caller can say whose directories they are.

use std::{
    collections::{HashMap, HashSet},
    ffi::OsStr,
    os::fd::{AsFd, BorrowedFd},
    os::unix::ffi::OsStrExt as _,
    path::Path,
};

use nix::{dir::Dir, fcntl::OFlag, sys::stat::Mode};

use super::beneath;

/// Directories deeper than this below the root are not entered (counted as incomplete).
pub const DEPTH_MAX: usize = 64;
/// Directories whose own bytes are kept per pass (the rest add to the root's).
pub const DIRS_MAX: usize = 16_384;

/// One measured tree.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    /// Allocated bytes of everything below the root (and the root's own blocks).
    pub bytes: u64,
    /// Entries looked at.
    pub entries: u64,
    /// Every entry was looked at (no budget, depth or error cut the walk short).
    pub complete: bool,
    /// `(kernel dev, inode)` of each directory, with the bytes directly in it.
    pub dirs: HashMap<(u32, u64), u64>,
}

struct Walk {
    budget: u64,
    dev: u64,
    root: (u32, u64),
    seen_links: HashSet<(u64, u64)>,
    tree: Tree,
}

impl Walk {
    fn add(&mut self, dir: (u32, u64), bytes: u64) {
        self.tree.bytes += bytes;
        let key = if self.tree.dirs.len() < DIRS_MAX || self.tree.dirs.contains_key(&dir) {
            dir
        } else {
            self.root
        };
        *self.tree.dirs.entry(key).or_default() += bytes;
    }

    fn dir(&mut self, fd: BorrowedFd<'_>, key: (u32, u64), depth: usize) {
        let Ok(mut d) = Dir::openat(
            fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            self.tree.complete = false;
            return;
        };
        let mut subdirs = Vec::new();
        for e in d.iter() {
            let Ok(e) = e else {
                self.tree.complete = false;
                break;
            };
            let name = OsStr::from_bytes(e.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            if self.tree.entries >= self.budget {
                self.tree.complete = false;
                break;
            }
            self.tree.entries += 1;
            let Ok(st) = beneath::lstat_at(fd, name) else {
                // Removed meanwhile: nothing to count.
                continue;
            };
            let bytes = st.st_blocks as u64 * 512;
            if beneath::is_dir(&st) {
                if st.st_dev != self.dev {
                    // A mount point: what is mounted there is another filesystem.
                    continue;
                }
                self.add(key, bytes);
                subdirs.push((name.to_os_string(), st.st_ino));
            } else if st.st_nlink > 1 && !self.seen_links.insert((st.st_dev, st.st_ino)) {
                continue;
            } else {
                self.add(key, bytes);
            }
        }
        drop(d);
        for (name, ino) in subdirs {
            if depth + 1 >= DEPTH_MAX {
                self.tree.complete = false;
                continue;
            }
            match beneath::open_dir(fd, &name) {
                Ok(sub) => self.dir(sub.as_fd(), (key.0, ino), depth + 1),
                Err(_) => self.tree.complete = false,
            }
        }
    }
}

/// Measures the tree at `root` (a path on the node; no symlink on the way), looking at no more
/// than `budget` entries.
pub fn measure(root: &Path, budget: u64) -> nix::Result<Tree> {
    let fd = beneath::open_root(root)?;
    let st = beneath::stat_fd(fd.as_fd())?;
    let key = (super::kernel_dev(st.st_dev), st.st_ino);
    let mut w = Walk {
        budget,
        dev: st.st_dev,
        root: key,
        seen_links: HashSet::new(),
        tree: Tree {
            complete: true,
            ..Default::default()
        },
    };
    w.add(key, st.st_blocks as u64 * 512);
    w.dir(fd.as_fd(), key, 0);
    Ok(w.tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_files_once_and_stops_at_the_budget_and_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), vec![1u8; 64 * 1024]).unwrap();
        std::fs::hard_link(root.join("a/b/f"), root.join("a/g")).unwrap();
        std::os::unix::fs::symlink("/", root.join("a/up")).unwrap();
        let tree = measure(root, 1000).unwrap();
        assert!(tree.complete);
        assert_eq!(tree.entries, 5, "a, b, f, g, up");
        assert!(tree.bytes >= 64 * 1024, "{tree:?}");
        assert!(tree.bytes < 2 * 64 * 1024, "the link counts once: {tree:?}");
        let short = measure(root, 2).unwrap();
        assert!(!short.complete);
        assert_eq!(short.entries, 2);
        assert!(measure(&root.join("a/up"), 10).is_err(), "a symlinked root");
    }
}
