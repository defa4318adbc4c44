//! Read-only access beneath a root, the only way the daemon opens what the processes it watches
//! made: every open is relative to a directory fd, with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)`, names are single components, symlinks are never
//! followed (`AT_SYMLINK_NOFOLLOW`, `O_NOFOLLOW`), and a mount point is never entered. Purge
//! (removal) and the growth sizer (bytes) both build on it.

use std::{
    ffi::{OsStr, OsString},
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    os::unix::ffi::OsStrExt as _,
    path::Path,
};

use nix::{
    errno::Errno,
    fcntl::{OFlag, OpenHow, ResolveFlag, openat2},
    sys::stat::{FileStat, Mode, SFlag, fstat, fstatat},
};

/// Resolution for every open below a root.
fn beneath_resolve() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_XDEV
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// Opens a policy root (no symlink anywhere on the path, checked by the kernel).
pub fn open_root(path: &Path) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(nix::fcntl::AT_FDCWD, path, how)
}

/// Whether `name` is one plain path component.
pub fn is_component(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0)
}

/// Opens `name` of `dir` (one component) read-only, beneath it, on the same mount, never
/// through a symlink.
fn open_beneath(dir: BorrowedFd<'_>, name: &OsStr, extra: OFlag) -> nix::Result<OwnedFd> {
    if !is_component(name) {
        return Err(Errno::EINVAL);
    }
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | extra)
        .resolve(beneath_resolve());
    openat2(dir, name, how)
}

/// Opens directory `name` of `dir`.
pub fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    open_beneath(dir, name, OFlag::O_DIRECTORY)
}

/// Opens file `name` of `dir` for reading (non-blocking: never waits on a FIFO).
pub fn open_file(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    open_beneath(dir, name, OFlag::O_NONBLOCK)
}

/// The first `max` bytes (one read) of file `name` in `dir`; empty when it cannot be read.
pub fn read_head(dir: BorrowedFd<'_>, name: &OsStr, max: usize) -> Vec<u8> {
    let mut buf = vec![0u8; max];
    let n = open_file(dir, name)
        .ok()
        .and_then(|fd| nix::unistd::read(&fd, &mut buf).ok())
        .unwrap_or(0);
    buf.truncate(n);
    buf
}

/// `lstat` of `name` in `dir`.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<FileStat> {
    if !is_component(name) {
        return Err(Errno::EINVAL);
    }
    fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
}

pub fn stat_fd(fd: BorrowedFd<'_>) -> nix::Result<FileStat> {
    fstat(fd)
}

pub fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

pub fn is_symlink(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
}

pub fn is_regular(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

/// The names in directory `dir` (without `.` and `..`).
pub fn list(dir: BorrowedFd<'_>) -> nix::Result<Vec<OsString>> {
    let mut d = nix::dir::Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = OsStr::from_bytes(e.file_name().to_bytes());
        if n != "." && n != ".." {
            out.push(n.to_os_string());
        }
    }
    Ok(out)
}

/// Opens directory `rel` (components below the root), component by component.
pub fn open_rel(root: BorrowedFd<'_>, rel: &Path) -> nix::Result<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    for c in rel.components() {
        let std::path::Component::Normal(name) = c else {
            return Err(Errno::EINVAL);
        };
        let next = match &cur {
            None => open_dir(root, name)?,
            Some(fd) => open_dir(fd.as_fd(), name)?,
        };
        cur = Some(next);
    }
    match cur {
        Some(fd) => Ok(fd),
        None => nix::unistd::dup(root),
    }
}
