//! Stage 3 — analyze: bounded aggregation by path, process and workload, leak suspects,
//! capacity and time-to-full, and the lock guard.

pub mod aggregate;
pub mod capacity;
pub mod growth;
pub mod leak;
pub mod locks;
pub mod table;

use std::{collections::HashMap, time::Duration};

use crate::{
    config::FileConfig,
    events::{Observed, kind::EventKind},
    node::errno::{EDQUOT, ENOSPC},
};
use aggregate::Aggregator;
use locks::{LockEvent, LockState, LockTracker, Touch, holder_alive};

/// What the analysis holds (behind one lock, taken once per consumed batch).
pub struct Analysis {
    pub agg: Aggregator,
    /// Who is filling each disk (`growth.enabled`).
    pub growth: growth::Growth,
    /// The lock guard (`locks.enabled`).
    pub locks: Option<LockTracker>,
    /// ENOSPC/EDQUOT events per filesystem (kernel dev) since start, for purge triggers.
    space_errors: HashMap<u32, u64>,
}

impl Analysis {
    pub fn new(f: &FileConfig) -> Self {
        let agg = Aggregator::new(aggregate::Limits {
            path_depth: f.aggregate.path_depth,
            max_paths: f.aggregate.max_paths,
            max_processes: f.aggregate.max_processes,
            max_workloads: f.aggregate.max_workloads,
            leak: leak::LeakConfig {
                window: Duration::from_secs(f.leak.window_secs),
                min_net: f.leak.min_net,
                ratio: f.leak.ratio,
                create_sample: f.probes.create_sample,
                delete_sample: f.probes.delete_sample,
            },
        });
        let locks = f.locks.enabled.then(|| {
            LockTracker::new(locks::Rules {
                globs: f.locks.glob_set().unwrap_or_default(),
                conventions: f.locks.conventions.then(locks::convention_set),
                learn: f.locks.learn,
                stale_timeout_secs: (f.locks.stale_timeout_secs > 0.0)
                    .then_some(f.locks.stale_timeout_secs),
                max_locks: f.locks.max_locks,
            })
        });
        Self {
            agg,
            growth: growth::Growth::new(f.growth.window_secs),
            locks,
            space_errors: HashMap::new(),
        }
    }

    /// Adds one event; returns what the lock guard made of it (`lock_key`: the lock identity of
    /// its path, when it has a complete absolute one).
    pub fn observe(
        &mut self,
        ev: &Observed<'_>,
        lock_key: impl FnOnce() -> Option<locks::LockKey>,
    ) -> Vec<LockEvent> {
        let r = ev.record;
        if (r.errno == ENOSPC || r.errno == EDQUOT)
            && let Some(dev) = ev.dev
        {
            *self.space_errors.entry(dev).or_default() += 1;
        }
        self.agg.observe(r, ev.who, ev.mount);
        let kind = r.kind();
        // Failures of the error kind (the storm case) never touch a lock.
        if !matches!(
            kind,
            EventKind::Heartbeat | EventKind::Delete | EventKind::Create
        ) || !r.path.starts_with('/')
            || !r.path_complete()
        {
            return Vec::new();
        }
        let Some(t) = self.locks.as_mut() else {
            return Vec::new();
        };
        // A path only in the caller's view has no lock identity: never guessed (one container's
        // `/data/x.lock` is not another's).
        let Some(key) = lock_key() else {
            return Vec::new();
        };
        let touch = Touch {
            key,
            path: &r.path,
            time_unix_ns: ev.unix_ns,
            who: ev.who,
            errno: r.errno,
            syscall: r.syscall_name(),
            exclusive: kind == EventKind::Create && r.exclusive_create(),
        };
        match kind {
            EventKind::Heartbeat => t.heartbeat(&touch),
            EventKind::Delete => t.removed(&touch, holder_alive),
            _ => t.created(&touch),
        }
    }

    /// ENOSPC/EDQUOT failures on filesystem `dev` since start.
    pub fn space_errors(&self, dev: u32) -> u64 {
        self.space_errors.get(&dev).copied().unwrap_or(0)
    }

    /// Re-checks lock holders: `holder-dead` transitions.
    pub fn check_holders(&mut self, now_unix_ns: u64) -> Vec<LockEvent> {
        match self.locks.as_mut() {
            Some(t) => t.check_holders(now_unix_ns, holder_alive),
            None => Vec::new(),
        }
    }

    /// Locks held now (a removal would be a steal).
    pub fn locks_held(&self) -> usize {
        self.locks.as_ref().map_or(0, LockTracker::held)
    }

    /// Paths of tracked locks whose holder is alive (purge keeps them).
    pub fn live_lock_paths(&self) -> Vec<String> {
        let Some(t) = self.locks.as_ref() else {
            return Vec::new();
        };
        t.locks()
            .filter(|l| {
                matches!(l.state, LockState::Healthy | LockState::HeartbeatFailing)
                    && l.holder.as_ref().is_some_and(holder_alive)
            })
            .map(|l| l.path.clone())
            .collect()
    }
}
