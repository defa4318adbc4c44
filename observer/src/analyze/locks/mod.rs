//! Stage 6 — lock guard. Locks are paths matched by configured globs or learned from a steady
//! refresh (utimes family, or writes to configured heartbeat files). Each lock has a holder
//! (pid + start time + comm + workload), an observed heartbeat interval, its last successful and
//! failed refresh (kernel time) and a state:
//!
//! `healthy` -> `heartbeat-failing` on the first failed refresh (not after a timeout),
//! `holder-dead` when the holder process is gone while the lock remains, `released` when the
//! holder removes it, `stolen` when another process removes or replaces it while the holder is
//! alive (a critical `lock-stolen` event naming both processes and the holder's last error).
//!
//! Locks are keyed by filesystem and path inside it, so a lock refreshed through one mount and
//! stolen through a bind mount of the same filesystem is the same lock.

pub mod learn;

use std::collections::HashMap;

use serde::Serialize;

use crate::events::identify::ProcIdentity;

/// Lock identity: (kernel dev of the filesystem, path inside the filesystem).
pub type LockKey = (u32, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockState {
    Healthy,
    HeartbeatFailing,
    HolderDead,
    Released,
    Stolen,
}

impl LockState {
    /// `observer lock-status` exit code: 0 healthy, 3 failing with a live holder (do not
    /// steal), 4 holder dead (safe to steal), 5 anything else.
    pub fn exit_code(self) -> u8 {
        match self {
            LockState::Healthy => 0,
            LockState::HeartbeatFailing => 3,
            LockState::HolderDead => 4,
            LockState::Released | LockState::Stolen => 5,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Holder {
    pub pid: u32,
    pub start_time: u64,
    pub comm: String,
    pub workload: String,
}

impl Holder {
    fn of(who: &ProcIdentity) -> Self {
        Self {
            pid: who.pid,
            start_time: who.start_time,
            comm: who.comm.clone(),
            workload: who.workload_label.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub errno: u32,
    pub errno_name: String,
    pub time_unix_ns: u64,
    pub syscall: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct Lock {
    /// The path as last seen (any mount of the filesystem).
    pub path: String,
    pub state: LockState,
    pub holder: Option<Holder>,
    /// `heartbeat` (first seen refreshing), `create-excl`, `mkdir`, `link`, `rename`.
    pub acquired_by: String,
    /// Learned from behaviour rather than matched by a configured glob.
    pub learned: bool,
    /// Observed interval between successful refreshes (moving average), seconds.
    pub heartbeat_interval_secs: Option<f64>,
    pub last_ok_unix_ns: Option<u64>,
    pub last_failure: Option<Failure>,
    /// The failure that started the current failing streak (what made the lock look stale;
    /// a removal racing the holder's next refresh makes `last_failure` ENOENT).
    pub first_failure: Option<Failure>,
    /// When the current failing streak started (the first failed refresh).
    pub failing_since_unix_ns: Option<u64>,
    /// Configured stale timeout, or inferred (5 x the observed interval).
    pub stale_timeout_secs: Option<f64>,
    /// When the lock starts to look stale to a contender judging by mtime.
    pub looks_stale_at_unix_ns: Option<u64>,
    pub state_since_unix_ns: u64,
    /// Who removed or replaced it (`stolen`, `released`).
    pub removed_by: Option<Holder>,
}

/// What a tracker call changed, as event records for the stream (`"type":"lock"`).
#[derive(Clone, Debug, Serialize)]
pub struct LockEvent {
    pub r#type: &'static str,
    /// `acquired`, `heartbeat-failing`, `heartbeat-recovered`, `holder-dead`, `released`,
    /// `lock-stolen`, `learned`.
    pub event: &'static str,
    pub severity: &'static str,
    pub time_unix_ns: u64,
    pub lock: Lock,
}

/// The heartbeat or deletion facts the tracker needs from one event.
pub struct Touch<'a> {
    pub key: LockKey,
    pub path: &'a str,
    pub time_unix_ns: u64,
    pub who: &'a ProcIdentity,
    pub errno: u32,
    pub syscall: &'static str,
}

pub struct LockTracker {
    globs: globset::GlobSet,
    stale_timeout_secs: Option<f64>,
    locks: HashMap<LockKey, Lock>,
    pub learner: learn::Learner,
    learn: bool,
    max_locks: usize,
    /// Failed refreshes of tracked locks by errno name, and steals (for metrics).
    pub failures_by_errno: std::collections::BTreeMap<String, u64>,
    pub steals: u64,
}

/// Moving-average weight of a new interval sample.
const EWMA: f64 = 0.3;

impl LockTracker {
    pub fn new(
        globs: globset::GlobSet,
        stale_timeout_secs: Option<f64>,
        max_locks: usize,
        learn: bool,
    ) -> Self {
        Self {
            globs,
            stale_timeout_secs,
            locks: HashMap::new(),
            learner: learn::Learner::new(max_locks * 4),
            learn,
            max_locks,
            failures_by_errno: Default::default(),
            steals: 0,
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

    fn new_lock(&self, path: &str, t: u64, who: &ProcIdentity, how: &str, learned: bool) -> Lock {
        Lock {
            path: path.to_string(),
            state: LockState::Healthy,
            holder: Some(Holder::of(who)),
            acquired_by: how.into(),
            learned,
            heartbeat_interval_secs: None,
            last_ok_unix_ns: None,
            last_failure: None,
            first_failure: None,
            failing_since_unix_ns: None,
            stale_timeout_secs: self.stale_timeout_secs,
            looks_stale_at_unix_ns: None,
            state_since_unix_ns: t,
            removed_by: None,
        }
    }

    fn tracked(&self, key: &LockKey, path: &str) -> bool {
        self.locks.contains_key(key) || self.globs.is_match(path)
    }

    /// A refresh (utimes family or heartbeat-file write), successful or failed.
    pub fn heartbeat(&mut self, t: &Touch<'_>) -> Vec<LockEvent> {
        let mut out = Vec::new();
        if !self.tracked(&t.key, t.path) {
            if t.errno == 0 && self.learn && self.learner.refresh(&t.key, t.who.pid, t.time_unix_ns)
            {
                let lock = self.new_lock(t.path, t.time_unix_ns, t.who, "heartbeat", true);
                out.push(self.event("learned", "info", t.time_unix_ns, &lock));
                self.insert(t.key.clone(), lock);
            } else {
                return out;
            }
        }
        if !self.locks.contains_key(&t.key) {
            if self.locks.len() >= self.max_locks {
                return out;
            }
            let lock = self.new_lock(t.path, t.time_unix_ns, t.who, "heartbeat", false);
            out.push(self.event("acquired", "info", t.time_unix_ns, &lock));
            self.insert(t.key.clone(), lock);
        }
        let stale_cfg = self.stale_timeout_secs;
        let (is_holder, vacant) = {
            let l = &self.locks[&t.key];
            (
                l.holder.as_ref().is_some_and(|h| h.pid == t.who.pid),
                matches!(
                    l.state,
                    LockState::Released | LockState::Stolen | LockState::HolderDead
                ),
            )
        };
        if !is_holder {
            if !vacant || t.errno != 0 {
                return out; // somebody else touching a held lock: not its heartbeat
            }
            // A new holder took over the vacant lock.
            let mut fresh = self.new_lock(t.path, t.time_unix_ns, t.who, "heartbeat", false);
            fresh.learned = self.locks[&t.key].learned;
            out.push(self.event("acquired", "info", t.time_unix_ns, &fresh));
            self.locks.insert(t.key.clone(), fresh);
        }
        let l = self.locks.get_mut(&t.key).expect("present");
        l.path = t.path.to_string();
        if t.errno == 0 {
            if let Some(prev) = l.last_ok_unix_ns.filter(|p| *p < t.time_unix_ns) {
                let dt = (t.time_unix_ns - prev) as f64 / 1e9;
                l.heartbeat_interval_secs = Some(match l.heartbeat_interval_secs {
                    Some(avg) => avg * (1.0 - EWMA) + dt * EWMA,
                    None => dt,
                });
            }
            l.last_ok_unix_ns = Some(t.time_unix_ns);
            l.stale_timeout_secs = stale_cfg.or(l.heartbeat_interval_secs.map(|i| i * 5.0));
            l.looks_stale_at_unix_ns = l
                .stale_timeout_secs
                .map(|s| t.time_unix_ns + (s * 1e9) as u64);
            if l.state != LockState::Healthy {
                let was = l.state;
                l.state = LockState::Healthy;
                l.state_since_unix_ns = t.time_unix_ns;
                l.failing_since_unix_ns = None;
                l.first_failure = None;
                if was == LockState::HeartbeatFailing {
                    let l = l.clone();
                    out.push(self.event("heartbeat-recovered", "info", t.time_unix_ns, &l));
                }
            }
        } else {
            *self
                .failures_by_errno
                .entry(crate::node::errno::name(t.errno))
                .or_default() += 1;
            let l = self.locks.get_mut(&t.key).expect("present");
            l.last_failure = Some(Failure {
                errno: t.errno,
                errno_name: crate::node::errno::name(t.errno),
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
                let l = l.clone();
                out.push(self.event("heartbeat-failing", "warning", t.time_unix_ns, &l));
            }
        }
        out
    }

    /// A successful create of a tracked path (O_EXCL open, mkdir, link, rename into place).
    pub fn created(&mut self, t: &Touch<'_>) -> Vec<LockEvent> {
        if t.errno != 0 || !self.globs.is_match(t.path) && !self.locks.contains_key(&t.key) {
            return Vec::new();
        }
        let how = match t.syscall {
            "mkdir" | "mkdirat" => "mkdir",
            "link" | "linkat" | "symlink" | "symlinkat" => "link",
            _ => "create-excl",
        };
        let vacant = self.locks.get(&t.key).is_none_or(|l| {
            matches!(
                l.state,
                LockState::Released | LockState::Stolen | LockState::HolderDead
            )
        });
        if !vacant || self.locks.len() >= self.max_locks && !self.locks.contains_key(&t.key) {
            return Vec::new();
        }
        let lock = self.new_lock(t.path, t.time_unix_ns, t.who, how, false);
        let ev = self.event("acquired", "info", t.time_unix_ns, &lock);
        self.insert(t.key.clone(), lock);
        vec![ev]
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
            if !matches!(l.state, LockState::Healthy | LockState::HeartbeatFailing) {
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

    fn insert(&mut self, key: LockKey, lock: Lock) {
        if self.locks.len() >= self.max_locks && !self.locks.contains_key(&key) {
            // Forget the oldest finished lock to make room.
            if let Some(k) = self
                .locks
                .iter()
                .filter(|(_, l)| matches!(l.state, LockState::Released | LockState::Stolen))
                .min_by_key(|(_, l)| l.state_since_unix_ns)
                .map(|(k, _)| k.clone())
            {
                self.locks.remove(&k);
            } else {
                return;
            }
        }
        self.locks.insert(key, lock);
    }

    pub fn locks(&self) -> impl Iterator<Item = &Lock> {
        self.locks.values()
    }

    /// Locks held now (healthy or heartbeat-failing): a removal would be a steal.
    pub fn held(&self) -> usize {
        self.locks
            .values()
            .filter(|l| matches!(l.state, LockState::Healthy | LockState::HeartbeatFailing))
            .count()
    }

    pub fn get(&self, key: &LockKey) -> Option<&Lock> {
        self.locks.get(key)
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
