//! Git worktrees: a worktree's `.git` file names its admin directory in the repository
//! (`<repo>/.git/worktrees/<name>`). The file is the worktree owner's to write, so what it
//! names is never trusted: the admin entry is pruned with the worktree only when it has that
//! shape, lies beneath the policy root, points back at this worktree, is not `git worktree
//! lock`ed, and passes every check an entry passes (age, open files, locks, mounts).

use std::{
    ffi::{OsStr, OsString},
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    path::{Component, Path, PathBuf},
};

use super::{Kept, Skip, safefs};

/// Where an admin directory named by a `.git` file lies below the root: (parent directory
/// relative to the root, its name). `Err` says why it is not a worktree admin entry.
pub fn locate(root: &Path, admin: &Path) -> Result<(PathBuf, OsString), &'static str> {
    if admin
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err("not a plain path");
    }
    let rel = admin
        .strip_prefix(root)
        .map_err(|_| "outside the policy root")?;
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err("not a worktree admin directory");
    };
    let mut up = parent.iter().rev();
    if up.next() != Some(OsStr::new("worktrees")) || up.next() != Some(OsStr::new(".git")) {
        return Err("not <repo>/.git/worktrees/<name>");
    }
    Ok((parent.to_path_buf(), name.to_os_string()))
}

/// Whether the worktree whose `.git` names `admin` is locked (`git worktree lock`). Beneath the
/// root the check is fd-relative; elsewhere (a repository outside the root) it is a lookup with
/// a deadline, so a `.git` naming a hung filesystem cannot stall purge.
pub fn is_locked(root_path: &Path, admin: &Path) -> Result<bool, Kept> {
    if let Ok((parent, name)) = locate(root_path, admin) {
        let root = safefs::open_root(root_path).map_err(|e| (Skip::Error, format!("root: {e}")))?;
        // Only "not there" means not locked; anything else (a symlink, another mount, no fds
        // left) keeps the worktree: its lock cannot be read.
        let unreadable = |e: nix::errno::Errno| {
            (
                Skip::Error,
                format!(
                    "git admin {}: {e}: its lock cannot be read",
                    admin.display()
                ),
            )
        };
        let found = |r: nix::Result<OwnedFd>| match r {
            Ok(fd) => Ok(Some(fd)),
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(unreadable(e)),
        };
        let Some(dir) = found(safefs::open_rel(root.as_fd(), &parent))? else {
            return Ok(false);
        };
        let Some(fd) = found(safefs::open_dir(dir.as_fd(), &name))? else {
            return Ok(false);
        };
        return match safefs::lstat_at(fd.as_fd(), OsStr::new("locked")) {
            Ok(_) => Ok(true),
            Err(nix::errno::Errno::ENOENT) => Ok(false),
            Err(e) => Err(unreadable(e)),
        };
    }
    let locked = admin.join("locked");
    match crate::node::fsio::within(&locked, crate::node::fsio::FS_TIMEOUT, |p| {
        std::fs::symlink_metadata(p)
    }) {
        Ok(_) => Ok(true),
        Err(e) if e.is_hung() => Err((Skip::Error, format!("git admin {}: {e}", admin.display()))),
        Err(_) => Ok(false),
    }
}

/// The admin entry of a deleted worktree, opened beneath the root: (its directory, its name),
/// when it has the shape, lies beneath the root and points back at `worktree`; otherwise why it
/// is left alone (`git worktree prune` cleans up what is left).
pub fn admin_entry(
    root: BorrowedFd<'_>,
    root_path: &Path,
    admin: &Path,
    worktree: &Path,
) -> Result<(OwnedFd, OsString), String> {
    let (parent, name) = locate(root_path, admin).map_err(|why| {
        format!(
            "git admin entry {} {why}: left (run `git worktree prune` in its repository)",
            admin.display()
        )
    })?;
    let dir = safefs::open_rel(root, &parent)
        .map_err(|_| format!("git admin entry {} not found", admin.display()))?;
    let points_back = safefs::open_dir(dir.as_fd(), &name)
        .ok()
        .map(|fd| safefs::read_head(fd.as_fd(), OsStr::new("gitdir"), 4096))
        .is_some_and(|g| Path::new(String::from_utf8_lossy(&g).trim()) == worktree.join(".git"));
    if !points_back {
        return Err(format!(
            "git admin entry {} does not point at this worktree: left",
            admin.display()
        ));
    }
    Ok((dir, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_worktree_admin_directory_beneath_the_root_is_located() {
        let root = Path::new("/w");
        assert_eq!(
            locate(root, Path::new("/w/repo/.git/worktrees/a")).unwrap(),
            (PathBuf::from("repo/.git/worktrees"), OsString::from("a"))
        );
        for bad in [
            "/w/victim",
            "/w/repo/.git/a",
            "/w/repo/worktrees/a",
            "/elsewhere/.git/worktrees/a",
            "/w/repo/.git/worktrees/../../victim",
            "/w/.git/worktrees",
        ] {
            assert!(locate(root, Path::new(bad)).is_err(), "{bad}");
        }
    }
}
