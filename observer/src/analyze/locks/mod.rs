//! Stage 6 — lock guard. A path is a lock once there is evidence: its acquisition seen by the
//! kernel (mkdir, `O_CREAT|O_EXCL`, link of a lock name), a successful refresh of a path a
//! configured glob names, or — for lock names by convention and, with `locks.learn`, any path —
//! one process refreshing it twice, or refreshing it and then failing to. Each lock has a holder
//! (pid + start time + comm + workload), an observed heartbeat interval, its last successful and
//! failed refresh (kernel time) and a state:
//!
//! `healthy` -> `heartbeat-failing` on the first failed refresh (not after a timeout),
//! `holder-dead` when the holder process is gone while the lock remains, `released` when the
//! holder removes it, `stolen` when another process removes or replaces it while the holder is
//! alive (a critical `lock-stolen` event naming both processes and the holder's last error).
//!
//! Only an acquisition or a successful refresh makes a process the holder; another process's
//! touch (failed or not) of a held lock changes nothing but its list of contenders.
//!
//! Locks are keyed by filesystem and path inside it, so a lock refreshed through one mount and
//! stolen through a bind mount of the same filesystem is the same lock.

pub mod learn;
mod model;

use std::collections::HashMap;

pub use model::{Failure, Holder, KnownBy, Lock, LockEvent, LockKey, LockState, Touch};

/// Lock names by convention (`locks.conventions`); the kernel reports acquisitions of the first
/// three (`observer_common::config::LOCK_NAME_SUFFIXES`). A `*.pid` file is a lock once its
/// process refreshes it.
pub const CONVENTIONS: &[&str] = &["**/*.lock", "**/*.lck", "**/LOCK", "**/*.pid"];

/// Lock-guard settings (from `[locks]`).
pub struct Rules {
    pub globs: globset::GlobSet,
    /// Lock names by convention (`None`: `locks.conventions = false`).
    pub conventions: Option<globset::GlobSet>,
    /// Any path refreshed twice by one process is a lock (`locks.learn`).
    pub learn: bool,
    pub stale_timeout_secs: Option<f64>,
    pub max_locks: usize,
}

/// The conventions as a glob set.
pub fn convention_set() -> globset::GlobSet {
    let mut b = globset::GlobSetBuilder::new();
    for g in CONVENTIONS {
        if let Ok(glob) = globset::GlobBuilder::new(g).literal_separator(true).build() {
            b.add(glob);
        }
    }
    b.build().unwrap_or_default()
}

pub struct LockTracker {
    rules: Rules,
    locks: HashMap<LockKey, Lock>,
    pub learner: learn::Learner,
    /// Failed refreshes of tracked locks by errno name, and steals (for metrics).
    pub failures_by_errno: std::collections::BTreeMap<String, u64>,
    pub steals: u64,
}

/// Moving-average weight of a new interval sample.
const EWMA: f64 = 0.3;

impl LockTracker {
    pub fn new(rules: Rules) -> Self {
        Self {
            learner: learn::Learner::new(rules.max_locks * 4),
            rules,
            locks: HashMap::new(),
            failures_by_errno: Default::default(),
            steals: 0,
        }
    }

    /// Why `path` could be a lock, strongest rule first.
    fn known_by(&self, path: &str) -> Option<KnownBy> {
        if self.rules.globs.is_match(path) {
            Some(KnownBy::Glob)
        } else if self
            .rules
            .conventions
            .as_ref()
            .is_some_and(|c| c.is_match(path))
        {
            Some(KnownBy::Convention)
        } else if self.rules.learn {
            Some(KnownBy::Learned)
        } else {
            None
        }
    }

    fn event(&self, event: &'static str, severity: &'static str, t: u64, l: &Lock) -> LockEvent {
        LockEvent {
            r#type: "lock",
            event,
            severity,
            time_unix_ns: t,
            lock: l.clone(),
        }
    }

    fn new_lock(&self, t: &Touch<'_>, how: &'static str, known_by: KnownBy) -> Lock {
        Lock {
            path: t.path.to_string(),
            state: LockState::Healthy,
            holder: Some(Holder::of(t.who)),
            acquired_by: how,
            known_by,
            confidence: known_by.confidence(),
            learned: how == "heartbeat" && known_by != KnownBy::Glob,
            heartbeat_interval_secs: None,
            last_ok_unix_ns: None,
            last_failure: None,
            first_failure: None,
            failing_since_unix_ns: None,
            stale_timeout_secs: self.rules.stale_timeout_secs,
            looks_stale_at_unix_ns: None,
            state_since_unix_ns: t.time_unix_ns,
            removed_by: None,
            contenders: Vec::new(),
            contender_touches: 0,
        }
    }

    /// A refresh (utimes family or heartbeat-file write), successful or failed.
    pub fn heartbeat(&mut self, t: &Touch<'_>) -> Vec<LockEvent> {
        let mut out = Vec::new();
        match self.locks.get_mut(&t.key) {
            Some(l) if l.holder.as_ref().is_some_and(|h| h.pid == t.who.pid) => {}
            Some(l) if !l.state.vacant() || t.errno != 0 => {
                // Somebody else touching a held lock (or failing to touch a vacant one): not
                // a heartbeat, never a new holder.
                l.contended(t.who, t.time_unix_ns, t.errno);
                return out;
            }
            Some(l) => {
                // A new holder took over the vacant lock.
                let (known_by, learned) = (l.known_by, l.learned);
                let mut fresh = self.new_lock(t, "heartbeat", known_by);
                fresh.learned = learned;
                out.push(self.event("acquired", "info", t.time_unix_ns, &fresh));
                self.locks.insert(t.key.clone(), fresh);
            }
            None => {
                let Some(known_by) = self.known_by(t.path) else {
                    return out;
                };
                // A configured glob needs no evidence but a successful refresh; other paths
                // need the same process's earlier successful refresh.
                let glob_now = known_by == KnownBy::Glob && t.errno == 0;
                let prev_ok = if glob_now {
                    None
                } else if t.errno == 0 {
                    self.learner
                        .refresh(&t.key, t.who.pid, &t.who.comm, t.time_unix_ns)
                } else {
                    self.learner.failed(&t.key, t.who.pid)
                };
                if prev_ok.is_none() && !glob_now {
                    return out;
                }
                let mut lock = self.new_lock(t, "heartbeat", known_by);
                lock.last_ok_unix_ns = prev_ok;
                let event = if lock.learned { "learned" } else { "acquired" };
                let ev = self.event(event, "info", t.time_unix_ns, &lock);
                if !self.insert(t.key.clone(), lock) {
                    return out; // every tracked lock is held: this one is not tracked
                }
                out.push(ev);
            }
        }
        let Some(l) = self.locks.get_mut(&t.key) else {
            return out;
        };
        l.path = t.path.to_string();
        if t.errno == 0 {
            refreshed(l, t.time_unix_ns, self.rules.stale_timeout_secs, &mut out);
            return out;
        }
        let name = crate::node::errno::name(t.errno);
        *self.failures_by_errno.entry(name.clone()).or_default() += 1;
        l.last_failure = Some(Failure {
            errno: t.errno,
            errno_name: name,
            time_unix_ns: t.time_unix_ns,
            syscall: t.syscall,
        });
        if l.state != LockState::HeartbeatFailing {
            l.state = LockState::HeartbeatFailing;
            l.state_since_unix_ns = t.time_unix_ns;
            if l.first_failure.is_none() {
                l.failing_since_unix_ns = Some(t.time_unix_ns);
                l.first_failure = l.last_failure.clone();
            }
            out.push(LockEvent {
                r#type: "lock",
                event: "heartbeat-failing",
                severity: "warning",
                time_unix_ns: t.time_unix_ns,
                lock: l.clone(),
            });
        }
        out
    }

    /// A successful create (O_EXCL open, mkdir, link; sampled creates too) of a lock-named or
    /// glob-matched path. An exclusive create replaces whatever was recorded at the path: it
    /// could not have succeeded while that lock existed (its removal went unseen, e.g. its
    /// filesystem was unmounted).
    pub fn created(&mut self, t: &Touch<'_>) -> Vec<LockEvent> {
        if t.errno != 0 {
            return Vec::new();
        }
        let known_by = match self.locks.get(&t.key) {
            Some(l) if !l.state.vacant() && !t.exclusive => return Vec::new(),
            Some(l) => l.known_by,
            None => match self.known_by(t.path) {
                Some(k @ (KnownBy::Glob | KnownBy::Convention)) => k,
                _ => return Vec::new(),
            },
        };
        let how = match t.syscall {
            "mkdir" | "mkdirat" => "mkdir",
            "link" | "linkat" | "symlink" | "symlinkat" => "link",
            _ => "create-excl",
        };
        let lock = self.new_lock(t, how, known_by);
        let ev = self.event("acquired", "info", t.time_unix_ns, &lock);
        if self.insert(t.key.clone(), lock) {
            vec![ev]
        } else {
            Vec::new()
        }
    }

    /// A successful unlink/rmdir of the path, or a rename onto it.
    pub fn removed(
        &mut self,
        t: &Touch<'_>,
        holder_alive: impl Fn(&Holder) -> bool,
    ) -> Vec<LockEvent> {
        if t.errno != 0 {
            return Vec::new();
        }
        let steals = &mut self.steals;
        let Some(l) = self.locks.get_mut(&t.key) else {
            return Vec::new();
        };
        if matches!(l.state, LockState::Released | LockState::Stolen) {
            return Vec::new();
        }
        let by_holder = l.holder.as_ref().is_some_and(|h| h.pid == t.who.pid);
        let alive = l.holder.as_ref().is_some_and(&holder_alive);
        l.removed_by = Some(Holder::of(t.who));
        l.state_since_unix_ns = t.time_unix_ns;
        let (state, event, severity) = if !by_holder && alive {
            *steals += 1;
            (LockState::Stolen, "lock-stolen", "critical")
        } else {
            (LockState::Released, "released", "info")
        };
        l.state = state;
        let l = l.clone();
        vec![self.event(event, severity, t.time_unix_ns, &l)]
    }

    /// Marks locks whose holder is gone (`alive` false) as `holder-dead`.
    pub fn check_holders(
        &mut self,
        now_unix_ns: u64,
        alive: impl Fn(&Holder) -> bool,
    ) -> Vec<LockEvent> {
        let mut out = Vec::new();
        for l in self.locks.values_mut() {
            if l.state.vacant() {
                continue;
            }
            if l.holder.as_ref().is_some_and(|h| !alive(h)) {
                l.state = LockState::HolderDead;
                l.state_since_unix_ns = now_unix_ns;
                out.push(LockEvent {
                    r#type: "lock",
                    event: "holder-dead",
                    severity: "warning",
                    time_unix_ns: now_unix_ns,
                    lock: l.clone(),
                });
            }
        }
        out
    }

    /// Adds a lock; when full, forgets the finished lock (released, stolen, holder dead) that
    /// finished first. False when every lock is held (the new one is not tracked).
    fn insert(&mut self, key: LockKey, lock: Lock) -> bool {
        if self.locks.len() >= self.rules.max_locks && !self.locks.contains_key(&key) {
            let oldest = self
                .locks
                .iter()
                .filter(|(_, l)| l.state.vacant())
                .min_by_key(|(_, l)| l.state_since_unix_ns)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    self.locks.remove(&k);
                }
                None => return false,
            }
        }
        self.locks.insert(key, lock);
        true
    }

    pub fn locks(&self) -> impl Iterator<Item = &Lock> {
        self.locks.values()
    }

    /// Locks held now (healthy or heartbeat-failing): a removal would be a steal.
    pub fn held(&self) -> usize {
        self.locks.values().filter(|l| !l.state.vacant()).count()
    }

    pub fn get(&self, key: &LockKey) -> Option<&Lock> {
        self.locks.get(key)
    }

    /// For a path that is not a lock: why not (yet), when it looks like one or was refreshed.
    pub fn not_a_lock_reason(&self, key: &LockKey, path: &str) -> Option<String> {
        let named = match self.known_by(path) {
            Some(KnownBy::Glob) => Some("matches locks.globs"),
            Some(KnownBy::Convention) => Some("has a lock name by convention"),
            _ => None,
        };
        let seen = self.learner.peek(key).map(|c| {
            format!(
                "refreshed once by pid {} ({}); a second refresh or a failed one makes it a lock",
                c.pid,
                crate::node::text::Printable(&c.comm)
            )
        });
        match (named, seen) {
            (_, Some(s)) => Some(s),
            (Some(n), None) => Some(format!(
                "{n}, but no acquisition or successful refresh of it has been seen"
            )),
            (None, None) => None,
        }
    }
}

/// A successful refresh by the holder: interval, staleness, recovery.
fn refreshed(l: &mut Lock, t_ns: u64, stale_cfg: Option<f64>, out: &mut Vec<LockEvent>) {
    if let Some(prev) = l.last_ok_unix_ns.filter(|p| *p < t_ns) {
        let dt = (t_ns - prev) as f64 / 1e9;
        l.heartbeat_interval_secs = Some(match l.heartbeat_interval_secs {
            Some(avg) => avg * (1.0 - EWMA) + dt * EWMA,
            None => dt,
        });
    }
    l.last_ok_unix_ns = Some(t_ns);
    l.stale_timeout_secs = stale_cfg.or(l.heartbeat_interval_secs.map(|i| i * 5.0));
    l.looks_stale_at_unix_ns = l.stale_timeout_secs.map(|s| t_ns + (s * 1e9) as u64);
    if l.state != LockState::Healthy {
        let was = l.state;
        l.state = LockState::Healthy;
        l.state_since_unix_ns = t_ns;
        l.failing_since_unix_ns = None;
        l.first_failure = None;
        if was == LockState::HeartbeatFailing {
            out.push(LockEvent {
                r#type: "lock",
                event: "heartbeat-recovered",
                severity: "info",
                time_unix_ns: t_ns,
                lock: l.clone(),
            });
        }
    }
}

/// Whether the holder process still runs (same pid and start time).
pub fn holder_alive(h: &Holder) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", h.pid)) {
        Ok(stat) => {
            // A zombie has exited: its lock is as good as abandoned.
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next());
            let start = crate::events::identify::parse_start_time(&stat);
            state != Some("Z") && (h.start_time == 0 || start == Some(h.start_time))
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;
