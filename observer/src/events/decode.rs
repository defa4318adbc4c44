//! Stage 3 — decode: raw ring-buffer records into typed events. Every length is checked; bad
//! input is a [`DecodeError`], never a panic.

use std::{mem::size_of, ptr};

use super::kind::EventKind;

use observer_common::{
    event::{
        EVENT_SYSCALL, EventHeader, PATH_BASE_CWD, PATH_BASE_DIRFD, PATH_FS_RELATIVE,
        PATH_HAS_TAIL, PATH_INCOMPLETE, PATH_REACHED_ROOT, PATH_TRUNCATED, PATH_WALKED, PathInfo,
        SYSCALL_EVENT_PATH_OFFSET, SyscallEvent,
    },
    syscall,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than the {need} bytes its kind needs")]
    Short { got: usize, need: usize },
    #[error("record header says {said} bytes but {got} arrived")]
    SizeMismatch { said: u32, got: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("path of {len} bytes overruns the record")]
    PathOverrun { len: usize },
    #[error("malformed path: {0}")]
    Path(&'static str),
}

/// A failed (or observed) syscall, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyscallRecord {
    pub ktime_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: String,
    pub syscall: u32,
    pub errno: u32,
    pub ret: i64,
    pub fd: i32,
    pub open_flags: u32,
    pub count: u64,
    pub ino: u64,
    pub dev: u32,
    pub aux: u32,
    pub nr: i32,
    pub hook: u32,
    /// Absolute path; empty when the call has none (e.g. `close`). As decoded it is the
    /// caller's view; the events stage puts it in the node's view ([`PathView`]).
    pub path: String,
    pub path_flags: u16,
    /// The path as the caller saw it, when that differs from `path` (another mount namespace).
    pub seen_as: Option<String>,
    /// Which view `path` is in.
    pub view: PathView,
    /// Inode number of the caller's mount namespace (0: unknown).
    pub mnt_ns: u32,
}

/// The view a record's `path` is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PathView {
    /// The node's: configuration (lock globs, purge roots, mounts) applies to it.
    #[default]
    Node,
    /// Only the caller's: its mount namespace could not be read, or the node's mount table does
    /// not show its filesystem. Node configuration never matches it.
    Caller,
}

impl SyscallRecord {
    pub fn syscall_name(&self) -> &'static str {
        syscall::name(self.syscall)
    }

    /// A create that fails if the path exists: mkdir, link, symlink, `O_CREAT|O_EXCL` open.
    pub fn exclusive_create(&self) -> bool {
        const O_EXCL: u32 = 0o200;
        match self.syscall {
            syscall::SYS_MKDIR
            | syscall::SYS_MKDIRAT
            | syscall::SYS_LINK
            | syscall::SYS_LINKAT
            | syscall::SYS_SYMLINK
            | syscall::SYS_SYMLINKAT => true,
            id if syscall::is_open_family(id) => self.open_flags & O_EXCL != 0,
            _ => false,
        }
    }

    /// The opcode name of an io_uring completion (`op<N>` for ones this build does not name).
    pub fn io_uring_op(&self) -> Option<std::borrow::Cow<'static, str>> {
        if self.syscall != syscall::SYS_IO_URING
            || self.aux == observer_common::event::AUX_IO_URING_OP_UNKNOWN
        {
            return None;
        }
        Some(match syscall::io_uring_op_name(self.aux) {
            Some(n) => n.into(),
            None => format!("op{}", self.aux).into(),
        })
    }

    /// What the record is: a heartbeat, a deletion, a (sampled successful) create or an error.
    pub fn kind(&self) -> EventKind {
        let heartbeat_write = syscall::is_write_family(self.syscall)
            && self.aux & observer_common::event::AUX_HEARTBEAT_WRITE != 0;
        if syscall::is_heartbeat(self.syscall) || heartbeat_write {
            EventKind::Heartbeat
        } else if syscall::is_delete(self.syscall) {
            EventKind::Delete
        } else if self.errno == 0 && syscall::is_create_family(self.syscall) {
            EventKind::Create
        } else {
            EventKind::Error
        }
    }

    /// The path as the caller saw it.
    pub fn caller_path(&self) -> &str {
        self.seen_as.as_deref().unwrap_or(&self.path)
    }

    /// The path in the node's view, when it has one.
    pub fn node_path(&self) -> Option<&str> {
        (self.view == PathView::Node && !self.path.is_empty()).then_some(self.path.as_str())
    }

    /// Whether the path is the whole absolute path (walk reached the root, nothing missing).
    pub fn path_complete(&self) -> bool {
        let f = self.path_flags;
        if self.path.is_empty() {
            return false;
        }
        f & (PATH_TRUNCATED | PATH_INCOMPLETE) == 0
            && (f & PATH_WALKED == 0 || f & PATH_REACHED_ROOT != 0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Syscall(SyscallRecord),
}

impl Event {
    /// Prefixes filesystem-relative paths (fexit on dentry-only VFS functions) with the mount
    /// point of their filesystem; leaves them marked incomplete when it is not mounted here.
    /// True when the path was filesystem-relative.
    pub fn absolutize(ev: &mut Event, mounts: &mut crate::node::mounts::MountTable) -> bool {
        let Event::Syscall(r) = ev;
        if r.path_flags & PATH_FS_RELATIVE == 0 {
            return false;
        }
        match mounts.resolve(r.dev, &r.path) {
            Some(abs) => {
                r.path = abs;
                r.path_flags &= !PATH_FS_RELATIVE;
            }
            None => {
                // Its filesystem is not mounted on the node: no name there.
                r.path_flags |= PATH_INCOMPLETE;
                r.view = PathView::Caller;
            }
        }
        true
    }
}

fn read<T: Copy>(buf: &[u8]) -> Result<T, DecodeError> {
    if buf.len() < size_of::<T>() {
        return Err(DecodeError::Short {
            got: buf.len(),
            need: size_of::<T>(),
        });
    }
    // SAFETY: length checked; the wire types are plain integers, valid for any bit pattern.
    Ok(unsafe { ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record.
pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader = read(buf)?;
    if header.size as usize != buf.len() {
        return Err(DecodeError::SizeMismatch {
            said: header.size,
            got: buf.len(),
        });
    }
    match header.kind {
        EVENT_SYSCALL => decode_syscall(buf).map(Event::Syscall),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

fn decode_syscall(buf: &[u8]) -> Result<SyscallRecord, DecodeError> {
    let ev: SyscallEvent = read(buf)?;
    let path_bytes = &buf[SYSCALL_EVENT_PATH_OFFSET..];
    let len = ev.path.len as usize;
    if len > path_bytes.len() {
        return Err(DecodeError::PathOverrun { len });
    }
    let path = if ev.path.flags == 0 && len == 0 {
        String::new()
    } else {
        assemble_path(&path_bytes[..len], &ev.path)?
    };
    // Every field of the wire record named: one added to it cannot be dropped here unnoticed.
    let SyscallEvent {
        header:
            EventHeader {
                kind: _,
                size: _,
                ktime_ns,
                tgid,
                tid,
                uid,
                gid,
                cgroup_id,
                comm,
                mnt_ns,
                _pad: _,
            },
        syscall,
        errno,
        ret,
        fd,
        flags,
        count,
        ino,
        dev,
        aux,
        nr,
        hook,
        path: PathInfo {
            flags: path_flags, ..
        },
    } = ev;
    Ok(SyscallRecord {
        ktime_ns,
        tgid,
        tid,
        uid,
        gid,
        cgroup_id,
        comm: c_str_lossy(&comm),
        syscall,
        errno,
        ret,
        fd,
        open_flags: flags,
        count,
        ino,
        dev,
        aux,
        nr,
        hook,
        path,
        path_flags,
        seen_as: None,
        view: PathView::Node,
        mnt_ns,
    })
}

fn c_str_lossy(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Builds the absolute path from components (leaf first) and an optional tail.
pub fn assemble_path(bytes: &[u8], info: &PathInfo) -> Result<String, DecodeError> {
    let mut comps: Vec<&[u8]> = Vec::with_capacity(info.ncomp as usize);
    let mut pos = 0usize;
    for _ in 0..info.ncomp {
        let rest = bytes
            .get(pos..)
            .ok_or(DecodeError::Path("component past the end"))?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Path("unterminated component"))?;
        if end == 0 {
            return Err(DecodeError::Path("empty component"));
        }
        comps.push(&rest[..end]);
        pos += end + 1;
    }
    let tail = if info.flags & PATH_HAS_TAIL != 0 {
        let off = info.tail_off as usize;
        if off < pos {
            return Err(DecodeError::Path("tail overlaps the components"));
        }
        let t = bytes
            .get(off..)
            .ok_or(DecodeError::Path("tail past the end"))?;
        let end = t.iter().position(|&b| b == 0).unwrap_or(t.len());
        Some(&t[..end])
    } else {
        None
    };

    // Lexical clean-up on the way (no `.` or empty segments, no trailing slash), in one
    // buffer: this runs for every record of a storm.
    let tail_absolute = tail.is_some_and(|t| t.first() == Some(&b'/'));
    let cut =
        !tail_absolute && info.flags & PATH_WALKED != 0 && info.flags & PATH_REACHED_ROOT == 0;
    let mut out = Normalized::new(!cut, bytes.len() + if cut { 3 } else { 1 });
    if cut {
        out.push("...");
    }
    if !tail_absolute {
        for c in comps.iter().rev() {
            out.push(&String::from_utf8_lossy(c));
        }
    }
    if let Some(t) = tail {
        out.push(&String::from_utf8_lossy(t));
    }
    Ok(out.finish())
}

/// A path built from pieces, keeping only non-empty segments other than `.`.
struct Normalized {
    out: String,
    absolute: bool,
}

impl Normalized {
    fn new(absolute: bool, capacity: usize) -> Self {
        Self {
            out: String::with_capacity(capacity),
            absolute,
        }
    }

    /// Appends the segments of `piece` (which may itself hold slashes).
    fn push(&mut self, piece: &str) {
        for seg in piece.split('/').filter(|s| !s.is_empty() && *s != ".") {
            if self.absolute || !self.out.is_empty() {
                self.out.push('/');
            }
            self.out.push_str(seg);
        }
    }

    fn finish(mut self) -> String {
        if self.absolute && self.out.is_empty() {
            self.out.push('/');
        }
        self.out
    }
}

/// Names of the `PATH_*` flags set, for output.
pub fn path_flag_names(flags: u16) -> impl Iterator<Item = &'static str> {
    [
        (PATH_WALKED, "walked"),
        (PATH_TRUNCATED, "truncated"),
        (PATH_HAS_TAIL, "tail"),
        (PATH_BASE_CWD, "base_cwd"),
        (PATH_BASE_DIRFD, "base_dirfd"),
        (PATH_INCOMPLETE, "incomplete"),
        (PATH_REACHED_ROOT, "reached_root"),
        (PATH_FS_RELATIVE, "fs_relative"),
    ]
    .into_iter()
    .filter(move |(bit, _)| flags & bit != 0)
    .map(|(_, name)| name)
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "decode_fuzz_tests.rs"]
mod fuzz;
