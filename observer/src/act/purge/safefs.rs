//! Purge's filesystem access: the read-only primitives of [`crate::node::beneath`] (every open
//! relative to an fd opened beneath the policy root, no symlinks, no mount crossing), plus what
//! only purge does — its trash directory, moves without replacing, and removal (`unlinkat`
//! removes a link, not its target).

use std::{
    ffi::OsStr,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    os::unix::ffi::OsStrExt as _,
};

use nix::{
    errno::Errno,
    sys::stat::Mode,
    unistd::{UnlinkatFlags, unlinkat},
};

pub use crate::node::beneath::{
    is_component, is_dir, is_regular, is_symlink, list, lstat_at, open_dir, open_rel, open_root,
    read_head, stat_fd,
};

/// Why a trash directory is refused.
#[derive(Debug, thiserror::Error)]
pub enum TrashError {
    #[error("{0}")]
    Sys(#[from] Errno),
    #[error("not purge's own: {0} (remove it, or choose another purge.trash_dir)")]
    NotOwn(String),
}

/// The trash directory `name` of `root`, made (mode 0700) when missing and `create`; `None`
/// when missing otherwise. An existing one is accepted only when it is purge's own: a real
/// directory (never a symlink), owned by this process's user, closed to everyone else. Anyone
/// else able to write there could have purge's removal threads delete what they placed.
pub fn open_trash(
    root: BorrowedFd<'_>,
    name: &OsStr,
    create: bool,
) -> Result<Option<OwnedFd>, TrashError> {
    if create {
        match nix::sys::stat::mkdirat(root, name, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let st = match lstat_at(root, name) {
        Ok(st) => st,
        Err(Errno::ENOENT) if !create => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if is_symlink(&st) {
        return Err(TrashError::NotOwn("a symlink".into()));
    }
    let fd = open_dir(root, name).map_err(|e| match e {
        Errno::ENOTDIR => TrashError::NotOwn("not a directory".into()),
        e => TrashError::Sys(e),
    })?;
    let st = stat_fd(fd.as_fd())?;
    let me = nix::unistd::geteuid().as_raw();
    if st.st_uid != me {
        return Err(TrashError::NotOwn(format!("owned by uid {}", st.st_uid)));
    }
    if st.st_mode & 0o077 != 0 {
        return Err(TrashError::NotOwn(format!(
            "mode {:04o} (others may write or read it)",
            st.st_mode & 0o7777
        )));
    }
    Ok(Some(fd))
}

/// Whether a trash entry is one purge made: `<run id>-<n>-<name>` or `<run id>-git-<name>`
/// (what is not, purge never removes).
pub fn is_purge_entry(name: &OsStr) -> bool {
    let b = name.as_bytes();
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    digits > 0 && b.get(digits) == Some(&b'-') && b.len() > digits + 1
}

/// Moves `name` of `from` to `to_name` of `to` without replacing anything.
pub fn move_noreplace(
    from: BorrowedFd<'_>,
    name: &OsStr,
    to: BorrowedFd<'_>,
    to_name: &OsStr,
) -> nix::Result<()> {
    if !is_component(name) || !is_component(to_name) {
        return Err(Errno::EINVAL);
    }
    nix::fcntl::renameat2(
        from,
        name,
        to,
        to_name,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
}

/// A budget of removals per second shared by the removal threads (`0` = unlimited).
pub struct RateBudget {
    per_sec: u64,
    state: std::sync::Mutex<(std::time::Instant, u64)>,
}

impl RateBudget {
    pub fn new(per_sec: u64) -> Self {
        Self {
            per_sec,
            state: std::sync::Mutex::new((std::time::Instant::now(), 0)),
        }
    }

    /// Takes one removal, sleeping (this thread only) while the second's budget is spent.
    pub fn take(&self) {
        if self.per_sec == 0 {
            return;
        }
        loop {
            let wait = {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let elapsed = s.0.elapsed();
                if elapsed >= std::time::Duration::from_secs(1) {
                    *s = (std::time::Instant::now(), 0);
                }
                if s.1 < self.per_sec {
                    s.1 += 1;
                    return;
                }
                std::time::Duration::from_secs(1).saturating_sub(s.0.elapsed())
            };
            std::thread::sleep(wait);
        }
    }
}

/// What a removal did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Removed {
    pub files: u64,
    pub dirs: u64,
    /// Entries left because they are mount points (or on another mount).
    pub mounts_left: u64,
    pub errors: u64,
}

/// Deepest tree removed (each level holds one fd).
const MAX_DEPTH: usize = 256;

/// Removes `name` of `dir` and, for a directory, everything in it. A symlink is removed as a
/// link; a mount point (EXDEV from `openat2`) is left in place and counted.
pub fn remove_tree(dir: BorrowedFd<'_>, name: &OsStr, budget: &RateBudget, out: &mut Removed) {
    remove_at(dir, name, budget, out, 0);
}

fn remove_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    budget: &RateBudget,
    out: &mut Removed,
    depth: usize,
) {
    if !is_component(name) {
        out.errors += 1;
        return;
    }
    budget.take();
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => {
            out.files += 1;
            return;
        }
        Err(Errno::EISDIR) => {}
        Err(Errno::ENOENT) => return,
        Err(Errno::EBUSY) => {
            out.mounts_left += 1;
            return;
        }
        Err(_) => {
            out.errors += 1;
            return;
        }
    }
    if depth >= MAX_DEPTH {
        out.errors += 1;
        return;
    }
    let sub = match open_dir(dir, name) {
        Ok(fd) => fd,
        Err(Errno::EXDEV) => {
            out.mounts_left += 1;
            return;
        }
        Err(Errno::ENOENT) => return,
        Err(_) => {
            out.errors += 1;
            return;
        }
    };
    match list(sub.as_fd()) {
        Ok(names) => {
            for n in names {
                remove_at(sub.as_fd(), &n, budget, out, depth + 1);
            }
        }
        Err(_) => out.errors += 1,
    }
    drop(sub);
    match unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
        Ok(()) => out.dirs += 1,
        Err(Errno::ENOENT) => {}
        // Not empty: something was left (a mount point or an error), already counted.
        Err(Errno::ENOTEMPTY) | Err(Errno::EBUSY) => {}
        Err(_) => out.errors += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::beneath::open_file;

    #[test]
    fn symlinks_are_removed_as_links_and_never_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        let t = root.path().join("t");
        std::fs::create_dir_all(t.join("a/b")).unwrap();
        std::fs::write(t.join("a/b/f"), b"1").unwrap();
        std::os::unix::fs::symlink(outside.path(), t.join("a/link")).unwrap();
        let fd = open_root(root.path()).unwrap();
        // A symlinked component is refused by the kernel.
        assert_eq!(
            open_dir(fd.as_fd(), OsStr::new("..")).unwrap_err(),
            Errno::EINVAL
        );
        let tfd = open_dir(fd.as_fd(), OsStr::new("t")).unwrap();
        let afd = open_dir(tfd.as_fd(), OsStr::new("a")).unwrap();
        // Refused (ENOTDIR: O_NOFOLLOW|O_DIRECTORY on a link; ELOOP: RESOLVE_NO_SYMLINKS).
        let e = open_dir(afd.as_fd(), OsStr::new("link")).unwrap_err();
        assert!(matches!(e, Errno::ENOTDIR | Errno::ELOOP), "{e}");
        assert_eq!(
            open_file(afd.as_fd(), OsStr::new("link")).unwrap_err(),
            Errno::ELOOP
        );
        let mut out = Removed::default();
        remove_tree(fd.as_fd(), OsStr::new("t"), &RateBudget::new(0), &mut out);
        assert_eq!((out.files, out.dirs, out.errors), (2, 3, 0), "{out:?}");
        assert!(!t.exists());
        assert!(outside.path().join("keep").exists());
    }

    #[test]
    fn names_must_be_single_components() {
        for bad in ["", ".", "..", "a/b", "/abs"] {
            assert!(!is_component(OsStr::new(bad)), "{bad}");
        }
        assert!(is_component(OsStr::new("ok.lock")));
    }
}
