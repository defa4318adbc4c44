//! Learning locks from behaviour: a path that one process refreshes successfully at a regular
//! interval (utimes family or heartbeat-file writes) is a lock even when no glob names it.

use std::num::NonZeroUsize;

use lru::LruCache;

use super::LockKey;

/// Consecutive regular intervals that make a lock.
const REGULAR: u32 = 3;
/// Intervals outside this range (seconds) are not heartbeats.
const MIN_INTERVAL: f64 = 0.02;
const MAX_INTERVAL: f64 = 300.0;
/// An interval is regular when within this fraction of the running mean.
const TOLERANCE: f64 = 0.5;

#[derive(Clone, Copy)]
struct Candidate {
    pid: u32,
    last_ns: u64,
    mean: f64,
    regular: u32,
}

pub struct Learner {
    candidates: LruCache<LockKey, Candidate>,
}

impl Learner {
    pub fn new(max: usize) -> Self {
        Self {
            candidates: LruCache::new(NonZeroUsize::new(max.max(1)).expect("non-zero")),
        }
    }

    /// A successful refresh of `key` by `pid` at `t_ns`; true when this makes it a lock.
    pub fn refresh(&mut self, key: &LockKey, pid: u32, t_ns: u64) -> bool {
        let Some(c) = self.candidates.get_mut(key) else {
            self.candidates.put(
                key.clone(),
                Candidate {
                    pid,
                    last_ns: t_ns,
                    mean: 0.0,
                    regular: 0,
                },
            );
            return false;
        };
        if c.pid != pid || t_ns <= c.last_ns {
            *c = Candidate {
                pid,
                last_ns: t_ns,
                mean: 0.0,
                regular: 0,
            };
            return false;
        }
        let dt = (t_ns - c.last_ns) as f64 / 1e9;
        c.last_ns = t_ns;
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&dt) {
            c.regular = 0;
            c.mean = 0.0;
            return false;
        }
        if c.regular == 0 || (dt - c.mean).abs() <= TOLERANCE * c.mean {
            c.mean = if c.regular == 0 {
                dt
            } else {
                (c.mean * c.regular as f64 + dt) / (c.regular + 1) as f64
            };
            c.regular += 1;
        } else {
            c.mean = dt;
            c.regular = 1;
        }
        if c.regular >= REGULAR {
            self.candidates.pop(key);
            return true;
        }
        false
    }
}
