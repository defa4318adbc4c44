//! What the lock guard knows about one lock, and the events it publishes.

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

    /// Nobody holds it: the next acquisition or successful refresh makes a new holder.
    pub fn vacant(self) -> bool {
        matches!(
            self,
            LockState::Released | LockState::Stolen | LockState::HolderDead
        )
    }
}

/// Why the observer treats a path as a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KnownBy {
    /// Matched by a configured `locks.globs` entry.
    Glob,
    /// A lock name by convention (`locks.conventions`: `*.lock`, `*.lck`, `LOCK`, `*.pid`).
    Convention,
    /// Any other path one process refreshed twice, or refreshed and then failed to (`locks.learn`).
    Learned,
}

impl KnownBy {
    /// How sure the observer is that the path is a lock.
    pub fn confidence(self) -> &'static str {
        match self {
            KnownBy::Glob => "configured",
            KnownBy::Convention => "high",
            KnownBy::Learned => "medium",
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
    pub fn of(who: &ProcIdentity) -> Self {
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

/// A process other than the holder that touched the lock (polling its mtime, trying to take
/// it): recorded, never a change of holder or state.
#[derive(Clone, Debug, Serialize)]
pub struct Contender {
    pub pid: u32,
    pub comm: String,
    pub touches: u64,
    pub last_unix_ns: u64,
    /// The last touch's errno (0 = it succeeded).
    pub last_errno: u32,
}

/// Contenders kept per lock (the first ones seen; later ones are counted in `contender_touches`).
pub const MAX_CONTENDERS: usize = 8;

#[derive(Clone, Debug, Serialize)]
pub struct Lock {
    /// The path as last seen (any mount of the filesystem).
    pub path: String,
    pub state: LockState,
    pub holder: Option<Holder>,
    /// `heartbeat` (first seen refreshing), `create-excl`, `mkdir`, `link`.
    pub acquired_by: &'static str,
    /// Why this path is a lock: `glob`, `convention`, `learned`.
    pub known_by: KnownBy,
    /// `configured` (glob), `high` (a lock name by convention), `medium` (learned).
    pub confidence: &'static str,
    /// Made a lock by its holder's behaviour rather than by a glob or an acquisition.
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
    /// Other processes that touched it while it was held (who was polling this lock).
    pub contenders: Vec<Contender>,
    /// All their touches, including contenders past `MAX_CONTENDERS`.
    pub contender_touches: u64,
}

impl Lock {
    /// Records a touch by a process that is not the holder.
    pub fn contended(&mut self, who: &ProcIdentity, t_ns: u64, errno: u32) {
        self.contender_touches += 1;
        if let Some(c) = self.contenders.iter_mut().find(|c| c.pid == who.pid) {
            c.touches += 1;
            c.last_unix_ns = t_ns;
            c.last_errno = errno;
        } else if self.contenders.len() < MAX_CONTENDERS {
            self.contenders.push(Contender {
                pid: who.pid,
                comm: who.comm.clone(),
                touches: 1,
                last_unix_ns: t_ns,
                last_errno: errno,
            });
        }
    }
}

/// What a tracker call changed, as event records for the stream (`"type":"lock"`).
#[derive(Clone, Debug, Serialize)]
pub struct LockEvent {
    pub r#type: &'static str,
    /// `acquired`, `learned`, `heartbeat-failing`, `heartbeat-recovered`, `holder-dead`,
    /// `released`, `lock-stolen`.
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
    /// A create that succeeds only if the path did not exist (mkdir, link, `O_EXCL` open): the
    /// kernel's word that any lock recorded at the path is gone.
    pub exclusive: bool,
}
