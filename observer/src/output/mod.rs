//! Stage 5 — outputs. `json`: one JSON object per line (stdout, `/events`, dumps); `metrics`:
//! the Prometheus exposition; `http`: the API serving them; `human`: columns for `tail`.

pub mod http;
mod http_purge;
pub mod human;
pub mod json;
pub mod metrics;
mod metrics_purge;

use bytes::Bytes;

/// One event as published to the stdout writer, `/events` clients and the flight recorder: its
/// JSON line plus the fields filters look at.
#[derive(Debug)]
pub struct Published {
    pub unix_ns: u64,
    pub kind: &'static str,
    pub errno: u32,
    pub pid: u32,
    pub comm: String,
    pub path: String,
    /// The JSON object, no trailing newline.
    pub line: Bytes,
}

impl crate::filter::View for Published {
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
        &self.comm
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn unix_ns(&self) -> u64 {
        self.unix_ns
    }
}

/// RFC 3339 with microseconds (`2026-11-23T10:00:00.123456Z`) of a Unix time in nanoseconds.
pub fn rfc3339_micros(unix_ns: u64) -> String {
    humantime::format_rfc3339_micros(
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(unix_ns),
    )
    .to_string()
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
