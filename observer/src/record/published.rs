//! An event as published to stdout, `/events` clients and the flight recorder, its line rendered
//! only when something reads it; the clock and time formats of event lines.

use std::sync::Arc;

use bytes::Bytes;

use crate::events::{decode::SyscallRecord, identify::ProcIdentity, line as json};

/// One event as published to the stdout writer, `/events` clients and the flight recorder: the
/// fields filters look at, and its JSON line. A syscall event keeps its decoded record and
/// renders the line only when something reads it (stdout, a client, a dump): with stdout off
/// and no client, a storm costs no JSON at all and the recorder holds records, not text.
#[derive(Debug)]
pub struct Published {
    pub unix_ns: u64,
    pub kind: &'static str,
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
        kind: &'static str,
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

    /// Memory this event holds in the recorder.
    pub fn cost(&self) -> usize {
        let heap = match &self.source {
            Source::Syscall { record, .. } => record.comm.len() + record.path.len(),
            Source::Ready { comm, path } => comm.len() + path.len(),
        };
        size_of::<Self>() + heap + self.line.get().map_or(0, Bytes::len)
    }
}

impl crate::events::filter::View for Published {
    fn kind(&self) -> &str {
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

/// RFC 3339 with microseconds (`2026-11-23T10:00:00.123456Z`) of a Unix time in nanoseconds.
pub fn rfc3339_micros(unix_ns: u64) -> String {
    Rfc3339Micros(unix_ns).with_str(str::to_string)
}

/// [`rfc3339_micros`] without allocating: formatted on the stack, the date and time of day
/// computed once per second (per thread). Serialises as a JSON string.
#[derive(Clone, Copy, Debug)]
pub struct Rfc3339Micros(pub u64);

impl Rfc3339Micros {
    pub fn with_str<R>(self, f: impl FnOnce(&str) -> R) -> R {
        use std::cell::Cell;
        thread_local! {
            /// (Unix second, its `YYYY-MM-DDTHH:MM:SS`).
            static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
        }
        let secs = self.0 / 1_000_000_000;
        let (cached, mut prefix) = SECOND.get();
        if cached != secs {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let s = humantime::format_rfc3339_seconds(t).to_string();
            prefix.copy_from_slice(&s.as_bytes()[..19]);
            SECOND.set((secs, prefix));
        }
        let mut buf = [0u8; 27];
        buf[..19].copy_from_slice(&prefix);
        buf[19] = b'.';
        let mut micros = (self.0 / 1_000) % 1_000_000;
        for b in buf[20..26].iter_mut().rev() {
            *b = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        buf[26] = b'Z';
        // Only ASCII digits and humantime's ASCII date.
        f(std::str::from_utf8(&buf).unwrap_or_default())
    }
}

/// Converts kernel monotonic timestamps (`bpf_ktime_get_ns`) to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    realtime_minus_monotonic_ns: i128,
}

impl Clock {
    pub fn new() -> Self {
        use nix::time::{ClockId, clock_gettime};
        let ns = |id| {
            clock_gettime(id).map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
        };
        let (Ok(real), Ok(mono)) = (ns(ClockId::CLOCK_REALTIME), ns(ClockId::CLOCK_MONOTONIC))
        else {
            return Self {
                realtime_minus_monotonic_ns: 0,
            };
        };
        Self {
            realtime_minus_monotonic_ns: real - mono,
        }
    }

    /// Unix time in nanoseconds of a kernel monotonic timestamp.
    pub fn unix_ns(&self, ktime_ns: u64) -> u64 {
        (ktime_ns as i128 + self.realtime_minus_monotonic_ns).clamp(0, u64::MAX as i128) as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
