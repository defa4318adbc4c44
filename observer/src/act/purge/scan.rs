//! Checking one entry (and everything below it) against a policy: identity, symlinks, mounts,
//! open files, file locks, live owners, git worktree locks; size, entry count and age.

use std::{
    ffi::OsStr,
    os::fd::{AsFd, BorrowedFd},
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use nix::{errno::Errno, sys::stat::FileStat};

use crate::node::owners::{is_owner_file, live_pid_in};

use super::{
    Skip,
    inuse::InUse,
    policy::{AgeFrom, Policy},
    safefs,
};

/// Deepest tree examined (each level holds one fd); deeper entries are kept.
const MAX_DEPTH: usize = 200;

/// What a scan found in one entry.
#[derive(Clone, Debug, Default)]
pub struct TreeInfo {
    /// Allocated bytes (`st_blocks * 512`).
    pub bytes: u64,
    /// Entries, the entry itself included (inodes freed).
    pub entries: u64,
    /// Newest timestamp (per the policy's `age_from`) of anything inside, Unix seconds.
    pub newest: i64,
    /// `(dev, ino)` of the entry itself.
    pub ino: (u64, u64),
    /// A git worktree's admin directory (from its `.git` file), to prune with it.
    pub git_admin: Option<PathBuf>,
}

pub use super::Kept;

pub struct Scanner<'a> {
    pub policy: &'a Policy,
    pub inuse: &'a InUse,
}

impl Scanner<'_> {
    /// Scans `name` of `parent` (whose absolute path is `abs`).
    pub fn entry(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        abs: &Path,
    ) -> Result<TreeInfo, Kept> {
        let c = &self.policy.cfg;
        let st = safefs::lstat_at(parent, name).map_err(|e| match e {
            Errno::ENOENT => (Skip::Changed, "vanished".to_string()),
            e => (Skip::Error, format!("lstat: {e}")),
        })?;
        if safefs::is_symlink(&st) {
            return Err((Skip::Symlink, "a symlink (never followed)".into()));
        }
        if st.st_dev != self.policy.root_dev {
            return Err((Skip::MountInside, "on another filesystem".into()));
        }
        if self.inuse.mount_below(abs) {
            return Err((Skip::MountInside, "a mount point is at or below it".into()));
        }
        if c.require_owner_dead
            && let Some(l) = self.inuse.live_lock_below(abs)
        {
            return Err((Skip::LockHolderAlive, format!("lock {l} has a live holder")));
        }
        let mut info = TreeInfo {
            ino: (st.st_dev, st.st_ino),
            ..Default::default()
        };
        self.account(parent, name, &st, &mut info)?;
        if !safefs::is_dir(&st) {
            return Ok(info);
        }
        let fd = safefs::open_dir(parent, name).map_err(|e| match e {
            Errno::EXDEV => (Skip::MountInside, "a mount point".to_string()),
            Errno::ELOOP | Errno::ENOTDIR => (Skip::Changed, "no longer a directory".to_string()),
            Errno::ENOENT => (Skip::Changed, "vanished".to_string()),
            e => (Skip::Error, format!("open: {e}")),
        })?;
        let now = safefs::stat_fd(fd.as_fd()).map_err(|e| (Skip::Error, format!("fstat: {e}")))?;
        if (now.st_dev, now.st_ino) != info.ino {
            return Err((Skip::Changed, "replaced while being examined".into()));
        }
        self.git_worktree(fd.as_fd(), &mut info)?;
        self.walk(fd.as_fd(), &mut info, 1)?;
        Ok(info)
    }

    fn walk(&self, dir: BorrowedFd<'_>, info: &mut TreeInfo, depth: usize) -> Result<(), Kept> {
        if depth > MAX_DEPTH {
            return Err((Skip::TooDeep, format!("deeper than {MAX_DEPTH} levels")));
        }
        let names = safefs::list(dir).map_err(|e| (Skip::Error, format!("readdir: {e}")))?;
        for name in names {
            let st = match safefs::lstat_at(dir, &name) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue, // removed meanwhile: nothing to keep
                Err(e) => return Err((Skip::Error, format!("lstat: {e}"))),
            };
            if st.st_dev != self.policy.root_dev {
                return Err((
                    Skip::MountInside,
                    format!("{} is on another filesystem", show(&name)),
                ));
            }
            self.account(dir, &name, &st, info)?;
            if safefs::is_dir(&st) {
                let sub = safefs::open_dir(dir, &name).map_err(|e| match e {
                    Errno::EXDEV => (
                        Skip::MountInside,
                        format!("{} is a mount point", show(&name)),
                    ),
                    Errno::ELOOP | Errno::ENOTDIR => {
                        (Skip::Changed, format!("{} changed", show(&name)))
                    }
                    e => (Skip::Error, format!("open {}: {e}", show(&name))),
                })?;
                self.walk(sub.as_fd(), info, depth + 1)?;
            }
        }
        Ok(())
    }

    /// Adds one entry; refuses the tree when the entry is in use.
    fn account(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        st: &FileStat,
        info: &mut TreeInfo,
    ) -> Result<(), Kept> {
        let c = &self.policy.cfg;
        info.bytes += st.st_blocks as u64 * 512;
        info.entries += 1;
        let t = match self.policy.age_from {
            AgeFrom::Mtime => st.st_mtime,
            AgeFrom::Ctime => st.st_ctime,
        };
        info.newest = info.newest.max(t);
        let key = (st.st_dev, st.st_ino);
        if c.require_no_open_files && self.inuse.open.contains(&key) {
            return Err((
                Skip::OpenFiles,
                format!("{} is open (fd or cwd of a live process)", show(name)),
            ));
        }
        if c.require_no_locks && self.inuse.locked.contains(&key) {
            return Err((Skip::Locked, format!("{} holds a file lock", show(name))));
        }
        if c.require_owner_dead
            && safefs::is_regular(st)
            && is_owner_file(name.as_bytes())
            && let Some(pid) = live_pid_in(&safefs::read_head(dir, name, 64))
        {
            return Err((
                Skip::OwnerAlive,
                format!("{} names live pid {pid}", show(name)),
            ));
        }
        Ok(())
    }

    /// A git worktree (a `.git` *file* saying `gitdir: <admin dir>`): kept when `git worktree
    /// lock`ed, otherwise its admin directory is remembered for pruning.
    fn git_worktree(&self, dir: BorrowedFd<'_>, info: &mut TreeInfo) -> Result<(), Kept> {
        let dotgit = OsStr::new(".git");
        let Ok(st) = safefs::lstat_at(dir, dotgit) else {
            return Ok(());
        };
        if !safefs::is_regular(&st) {
            return Ok(());
        }
        let head = safefs::read_head(dir, dotgit, 4096);
        let text = String::from_utf8_lossy(&head);
        let Some(admin) = text.trim().strip_prefix("gitdir:").map(str::trim) else {
            return Ok(());
        };
        let admin = PathBuf::from(admin);
        if super::worktree::is_locked(&self.policy.cfg.root, &admin)? {
            return Err((
                Skip::GitLocked,
                format!("git worktree locked ({})", admin.display()),
            ));
        }
        info.git_admin = Some(admin);
        Ok(())
    }
}

pub fn show(name: &OsStr) -> String {
    name.to_string_lossy().into_owned()
}
