//! Automatic purge triggers, evaluated once a second on their own thread (statvfs can block on
//! a sick filesystem; the async runtime never waits on it).

use std::{
    collections::VecDeque,
    sync::Weak,
    time::{Duration, Instant},
};

use super::{FreeSpace, Purger, Request, policy::Policy};

/// Per policy: recent ENOSPC/EDQUOT totals and the last automatic run.
struct PolicyState {
    samples: VecDeque<(Instant, u64)>,
    last_run: Option<Instant>,
}

/// Which trigger fires for `p` now, if any.
fn fired(
    p: &Policy,
    errors_per_min: u64,
    free: Option<FreeSpace>,
    ttf: Option<f64>,
) -> Option<String> {
    let t = &p.cfg.trigger;
    if t.errors_per_min > 0 && errors_per_min >= t.errors_per_min {
        return Some("errors".into());
    }
    if let Some(f) = free {
        if t.free_below_percent > 0.0 && f.free_percent() < t.free_below_percent {
            return Some("free-space".into());
        }
        if t.inodes_below_percent > 0.0
            && f.inodes > 0
            && f.free_inodes_percent() < t.inodes_below_percent
        {
            return Some("free-inodes".into());
        }
    }
    if t.time_to_full_below_secs > 0.0 && ttf.is_some_and(|s| s < t.time_to_full_below_secs) {
        return Some("time-to-full".into());
    }
    None
}

/// What the triggers watch, from the rest of the daemon.
pub trait Watch: Send + Sync {
    fn purger(&self) -> Option<&Purger>;
    /// ENOSPC/EDQUOT failures on filesystem `dev` (kernel encoding) since start.
    fn space_errors(&self, dev: u32) -> u64;
    /// Shortest time-to-full among the sampled mounts on filesystem `st_dev`.
    fn time_to_full(&self, st_dev: u64) -> Option<f64>;
}

/// Runs until the daemon is gone.
pub fn spawn(watch: Weak<dyn Watch>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("purge-trigger".into())
        .spawn(move || {
            let mut states: Vec<PolicyState> = Vec::new();
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let Some(watch) = watch.upgrade() else { return };
                let Some(purger) = watch.purger() else { continue };
                let Some(purge) = purger.purge.clone() else { return };
                if states.is_empty() {
                    states = purge
                        .policies
                        .iter()
                        .map(|_| PolicyState {
                            // The counters started at zero with the daemon.
                            samples: VecDeque::from([(Instant::now(), 0)]),
                            last_run: None,
                        })
                        .collect();
                }
                for (p, s) in purge.policies.iter().zip(states.iter_mut()) {
                    // Sampled here for GET /purge too (which never calls into a filesystem).
                    let free = FreeSpace::of(&p.cfg.root);
                    purger
                        .stats
                        .free
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(p.cfg.name.clone(), free);
                    if !p.cfg.auto {
                        continue;
                    }
                    let dev = crate::node::kernel_dev(p.root_dev);
                    let total = watch.space_errors(dev);
                    let now = Instant::now();
                    s.samples.push_back((now, total));
                    while s.samples.front().is_some_and(|(t, _)| now - *t > Duration::from_secs(60)) {
                        s.samples.pop_front();
                    }
                    let per_min = total - s.samples.front().map_or(total, |(_, v)| *v).min(total);
                    let ttf = watch.time_to_full(p.root_dev);
                    let Some(trigger) = fired(p, per_min, free, ttf) else {
                        continue;
                    };
                    if s.last_run.is_some_and(|t| t.elapsed() < Duration::from_secs(p.cfg.cooldown_secs)) {
                        continue;
                    }
                    let req = Request {
                        policy: Some(p.cfg.name.clone()),
                        execute: p.cfg.execute,
                        trigger: trigger.clone(),
                        requested_by: "trigger".into(),
                    };
                    match purger.request(req) {
                        Ok(_) => {
                            s.last_run = Some(now);
                            tracing::warn!(policy = %p.cfg.name, trigger, execute = p.cfg.execute, "purge triggered");
                        }
                        Err(e) => tracing::debug!(policy = %p.cfg.name, error = %e, "purge trigger not queued"),
                    }
                }
            }
        })
        .map(|_| ())
}
