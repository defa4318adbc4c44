//! Stage 5 — outputs. `json`: one JSON object per line for `observer run`.

pub mod json;

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
