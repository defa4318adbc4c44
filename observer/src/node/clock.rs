//! Time: the wall clock now, kernel monotonic timestamps converted to wall-clock time, and the
//! RFC 3339 formats of event lines.

use std::time::UNIX_EPOCH;

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Unix time now in nanoseconds.
pub fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
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
            let t = UNIX_EPOCH + std::time::Duration::from_secs(secs);
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

    /// `CLOCK_REALTIME - CLOCK_MONOTONIC` in ns, as the kernel programs take it (0 = unknown).
    pub fn realtime_offset_ns(&self) -> u64 {
        self.realtime_minus_monotonic_ns.clamp(0, u64::MAX as i128) as u64
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
