//! An event as published to stdout, `/events` clients and the flight recorder, its line rendered
//! only when something reads it; the clock and time formats of event lines.

use std::sync::Arc;

use bytes::Bytes;

use crate::events::{decode::SyscallRecord, identify::ProcIdentity, kind::EventKind, line as json};

/// One event as published to the stdout writer, `/events` clients and the flight recorder: the
/// fields filters look at, and its JSON line. A syscall event keeps its decoded record and
/// renders the line only when something reads it (stdout, a client, a dump): with stdout off
/// and no client, a storm costs no JSON at all and the recorder holds records, not text.
#[derive(Debug)]
pub struct Published {
    pub unix_ns: u64,
    pub kind: EventKind,
    pub errno: u32,
    pub pid: u32,
    source: Source,
    /// The JSON object (no trailing newline), once rendered for a client or given ready.
    line: std::sync::OnceLock<Bytes>,
}

#[derive(Debug)]
enum Source {
    Syscall {
        record: SyscallRecord,
        who: Arc<ProcIdentity>,
    },
    Ready {
        comm: String,
        path: String,
    },
}

impl Published {
    /// A syscall event made by `who`, at `unix_ns`; its line is rendered on demand.
    pub fn syscall(record: SyscallRecord, who: Arc<ProcIdentity>, unix_ns: u64) -> Self {
        Self {
            unix_ns,
            kind: record.kind(),
            errno: record.errno,
            pid: record.tgid,
            source: Source::Syscall { record, who },
            line: std::sync::OnceLock::new(),
        }
    }

    /// An event whose line is already made (lock guard, purge).
    pub fn ready(
        unix_ns: u64,
        kind: EventKind,
        (errno, pid): (u32, u32),
        comm: String,
        path: String,
        line: Bytes,
    ) -> Self {
        Self {
            unix_ns,
            kind,
            errno,
            pid,
            source: Source::Ready { comm, path },
            line: std::sync::OnceLock::from(line),
        }
    }

    pub fn comm(&self) -> &str {
        match &self.source {
            Source::Syscall { record, .. } => &record.comm,
            Source::Ready { comm, .. } => comm,
        }
    }

    pub fn path(&self) -> &str {
        match &self.source {
            Source::Syscall { record, .. } => &record.path,
            Source::Ready { path, .. } => path,
        }
    }

    /// Appends the line (no newline) to `out`, rendering it there when it is not cached.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        match (self.line.get(), &self.source) {
            (Some(l), _) => out.extend_from_slice(l),
            (None, Source::Syscall { record, who }) => {
                json::syscall_line_into(out, record, who, self.unix_ns)
            }
            (None, Source::Ready { .. }) => {}
        }
    }

    fn render(&self) -> Bytes {
        let mut v = Vec::new();
        self.write_line(&mut v);
        Bytes::from(v)
    }

    /// The line, rendered once and kept (for events sent to `/events` clients).
    pub fn line(&self) -> &Bytes {
        self.line.get_or_init(|| self.render())
    }

    /// The line, from the cache or rendered afresh without keeping it (replays and dumps of
    /// recorder events, whose memory is accounted without a line).
    pub fn line_uncached(&self) -> Bytes {
        self.line.get().cloned().unwrap_or_else(|| self.render())
    }

    /// What a report groups a failing call by: (workload, comm, syscall, errno name, path in the
    /// node's view, else as the caller saw it). `None` for an event not made by a syscall.
    pub fn victim_key(&self) -> Option<[String; 5]> {
        let Source::Syscall { record: r, who } = &self.source else {
            return None;
        };
        Some([
            who.workload.label(),
            r.comm.clone(),
            r.syscall_name().to_string(),
            crate::node::errno::name_static(r.errno).into_owned(),
            r.node_path().unwrap_or(r.caller_path()).to_string(),
        ])
    }

    /// Memory this event holds in the recorder.
    pub fn cost(&self) -> usize {
        let heap = match &self.source {
            Source::Syscall { record, .. } => {
                record.comm.len()
                    + record.path.len()
                    + record.seen_as.as_ref().map_or(0, String::len)
            }
            Source::Ready { comm, path } => comm.len() + path.len(),
        };
        size_of::<Self>() + heap + self.line.get().map_or(0, Bytes::len)
    }
}

impl crate::events::filter::View for Published {
    fn kind(&self) -> EventKind {
        self.kind
    }
    fn errno(&self) -> u32 {
        self.errno
    }
    fn pid(&self) -> u32 {
        self.pid
    }
    fn comm(&self) -> &str {
        Published::comm(self)
    }
    fn path(&self) -> &str {
        Published::path(self)
    }
    fn unix_ns(&self) -> u64 {
        self.unix_ns
    }
}
