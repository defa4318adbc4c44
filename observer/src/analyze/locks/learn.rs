//! Evidence before a lock: paths refreshed once (utimes family or heartbeat-file writes),
//! remembered per process so that the same process's second refresh — or its first failed one —
//! makes the path a lock, with no glob and no waiting for a regular rhythm.

use std::num::NonZeroUsize;

use lru::LruCache;

use super::LockKey;

/// Refreshes closer together than this (seconds) are one operation (a tool setting times twice),
/// not a heartbeat.
const MIN_INTERVAL: f64 = 0.02;
/// A refresh this long after the previous one (seconds) starts over.
const MAX_INTERVAL: f64 = 300.0;

/// One path refreshed successfully by one process, not (yet) a lock.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub pid: u32,
    pub comm: String,
    pub last_ok_ns: u64,
}

/// Bounded (least recently refreshed forgotten first): a process touching many paths once
/// (`tar`, `cp -a`) costs a slot each, never a lock.
pub struct Learner {
    candidates: LruCache<LockKey, Candidate>,
}

impl Learner {
    pub fn new(max: usize) -> Self {
        Self {
            candidates: LruCache::new(NonZeroUsize::new(max.max(1)).expect("non-zero")),
        }
    }

    /// A successful refresh of `key` by `pid` at `t_ns`. When it is that process's second one
    /// (at least `MIN_INTERVAL` after the first, at most `MAX_INTERVAL`), the candidate is taken
    /// and its previous refresh time returned: the path is a lock.
    pub fn refresh(&mut self, key: &LockKey, pid: u32, comm: &str, t_ns: u64) -> Option<u64> {
        if let Some(c) = self.candidates.get_mut(key)
            && c.pid == pid
            && t_ns > c.last_ok_ns
        {
            let dt = (t_ns - c.last_ok_ns) as f64 / 1e9;
            if dt < MIN_INTERVAL {
                return None; // the same operation: keep the first time
            }
            if dt <= MAX_INTERVAL {
                return self.candidates.pop(key).map(|c| c.last_ok_ns);
            }
        }
        self.candidates.put(
            key.clone(),
            Candidate {
                pid,
                comm: comm.to_string(),
                last_ok_ns: t_ns,
            },
        );
        None
    }

    /// A failed refresh of `key` by `pid`: when the same process refreshed it successfully
    /// before, the candidate is taken and that refresh's time returned (a heartbeat failing).
    pub fn failed(&mut self, key: &LockKey, pid: u32) -> Option<u64> {
        match self.candidates.peek(key) {
            Some(c) if c.pid == pid => self.candidates.pop(key).map(|c| c.last_ok_ns),
            _ => None,
        }
    }

    /// The candidate for `key`, if any (for `lock-status` on a path that is not a lock yet).
    pub fn peek(&self, key: &LockKey) -> Option<&Candidate> {
        self.candidates.peek(key)
    }
}
