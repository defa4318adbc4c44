//! What a dead process probably left in a directory: the entries made (born, by `statx`'s
//! birth time; changed, where a filesystem keeps no birth time) while it ran, grouped into
//! workspaces — a directory with siblings named after it (`job-17`, `job-17.cred.sh`,
//! `job-17-artifacts`) — and the pid files there naming a process that is gone. One directory
//! is listed (never a tree: no filesystem scan), at most `max_names` names, through
//! [`crate::node::beneath`] (no symlink followed).

use std::{
    ffi::{CString, OsStr},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    os::unix::ffi::OsStrExt as _,
    path::Path,
};

use nix::{dir::Dir, fcntl::OFlag, sys::stat::Mode};
use serde::Serialize;

use super::{beneath, owners};

/// An entry made while the process ran.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Left {
    pub name: String,
    pub dir: bool,
    /// Allocated bytes of the entry itself (a directory's contents are not walked).
    pub bytes: u64,
}

/// A directory and the siblings named after it, all made while the process ran.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Workspace {
    pub stem: String,
    pub members: Vec<String>,
}

/// One directory's listing.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Found {
    pub entries: Vec<Left>,
    /// Pid files (and lock files) whose content names a process that is gone: (name, pid).
    pub dead_owner_files: Vec<(String, u32)>,
    /// More names than were looked at.
    pub truncated: bool,
}

/// What `statx` says of an entry.
struct Born {
    ns: u64,
    dir: bool,
    regular: bool,
    bytes: u64,
}

/// Birth time (or change time), type and allocated bytes of `name` in `dir`, never following
/// it.
fn born(dir: BorrowedFd<'_>, name: &OsStr) -> Option<Born> {
    if !beneath::is_component(name) {
        return None;
    }
    let c = CString::new(name.as_bytes()).ok()?;
    // SAFETY: statx fills `stx`; `c` is a valid C string and `dir` an open directory.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_DONT_SYNC,
            libc::STATX_BTIME | libc::STATX_CTIME | libc::STATX_TYPE | libc::STATX_BLOCKS,
            &mut stx,
        )
    };
    if rc != 0 {
        return None;
    }
    let t = if stx.stx_mask & libc::STATX_BTIME != 0 {
        stx.stx_btime
    } else {
        stx.stx_ctime
    };
    let ns = (t.tv_sec.max(0) as u64) * 1_000_000_000 + u64::from(t.tv_nsec);
    let fmt = u32::from(stx.stx_mode) & libc::S_IFMT;
    Some(Born {
        ns,
        dir: fmt == libc::S_IFDIR,
        regular: fmt == libc::S_IFREG,
        bytes: stx.stx_blocks * 512,
    })
}

/// Lists `dir` (a node path; no symlink on the way): entries born in `[from_ns, to_ns]`, and
/// owner files naming a dead process (whenever made).
pub fn scan(dir: &Path, from_ns: u64, to_ns: u64, max_names: usize) -> nix::Result<Found> {
    let fd = beneath::open_root(dir)?;
    let mut d = Dir::openat(
        fd.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Found::default();
    let mut seen = 0;
    for e in d.iter() {
        let Ok(e) = e else { break };
        let name = OsStr::from_bytes(e.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        if seen >= max_names {
            out.truncated = true;
            break;
        }
        seen += 1;
        let Some(b) = born(fd.as_fd(), name) else {
            continue;
        };
        let shown = name.to_string_lossy().into_owned();
        // Only a regular file is read (never a FIFO or a device someone named `x.pid`).
        if b.regular
            && owners::is_owner_file(name.as_bytes())
            && let Some(pid) = owners::named_pid(&beneath::read_head(fd.as_fd(), name, 64))
            && !owners::alive(pid)
        {
            out.dead_owner_files.push((shown.clone(), pid));
        }
        if (from_ns..=to_ns).contains(&b.ns) {
            out.entries.push(Left {
                name: shown,
                dir: b.dir,
                bytes: b.bytes,
            });
        }
    }
    out.entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Workspaces among `entries`: each directory with the entries named after it (its name then
/// `.`, `-` or `_`); only groups of two or more.
pub fn workspaces(entries: &[Left]) -> Vec<Workspace> {
    let mut out = Vec::new();
    for d in entries.iter().filter(|e| e.dir) {
        let members: Vec<String> = entries
            .iter()
            .filter(|e| {
                e.name == d.name
                    || e.name.strip_prefix(d.name.as_str()).is_some_and(|r| {
                        r.starts_with(['.', '-', '_'])
                            // Not a sibling of a longer-named directory (`job-1.x`
                            // belongs to `job-1`, not to `job`).
                            && !entries.iter().any(|o| {
                                o.dir
                                    && o.name.len() > d.name.len()
                                    && o.name != e.name
                                    && e.name
                                        .strip_prefix(o.name.as_str())
                                        .is_some_and(|r| r.starts_with(['.', '-', '_']))
                            })
                    })
            })
            .map(|e| e.name.clone())
            .collect();
        if members.len() >= 2 {
            out.push(Workspace {
                stem: d.name.clone(),
                members,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn left(name: &str, dir: bool) -> Left {
        Left {
            name: name.into(),
            dir,
            bytes: 0,
        }
    }

    #[test]
    fn a_directory_and_the_siblings_named_after_it_are_a_workspace() {
        let e = [
            left("job-1", true),
            left("job-1-artifacts", true),
            left("job-1.cred.sh", false),
            left("job-10", true),
            left("job-10.cred.sh", false),
            left("other", false),
        ];
        let w = workspaces(&e);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(
            w[0].members,
            ["job-1", "job-1-artifacts", "job-1.cred.sh"],
            "job-1-artifacts is job-1's sibling, not a workspace of its own"
        );
        assert_eq!(w[1].members, ["job-10", "job-10.cred.sh"]);
    }

    #[test]
    fn lists_what_was_born_in_the_window_and_dead_owners() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("ws")).unwrap();
        std::fs::write(t.path().join("ws.cred.sh"), "x").unwrap();
        std::fs::write(t.path().join("d.pid"), "4194999\n").unwrap();
        std::fs::write(t.path().join("me.pid"), std::process::id().to_string()).unwrap();
        let f = scan(t.path(), 0, u64::MAX, 100).unwrap();
        assert_eq!(f.entries.len(), 4);
        assert_eq!(f.dead_owner_files, [("d.pid".to_string(), 4_194_999)]);
        assert_eq!(workspaces(&f.entries)[0].members, ["ws", "ws.cred.sh"]);
        assert!(scan(t.path(), 0, 1, 100).unwrap().entries.is_empty());
        assert!(scan(t.path(), 0, u64::MAX, 2).unwrap().truncated);
    }
}
