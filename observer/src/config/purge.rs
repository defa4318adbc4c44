//! `[purge]`: the emergency purge's settings and policies, as written. They are checked (roots,
//! globs, ages) by `act::purge::check` before purge starts; a refused section turns purge off and
//! never stops observation.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PurgeSection {
    /// Master switch: without it no purge runs, manual or automatic.
    pub enabled: bool,
    /// Name of the trash directory made under each policy root (same filesystem: moving an
    /// entry there is one rename).
    pub trash_dir: String,
    /// Threads removing trashed trees (never the async runtime's).
    pub workers: usize,
    /// Rate budget of the removal threads (unlinks + rmdirs per second, all workers); 0 = none.
    pub max_removals_per_sec: u64,
    pub policies: Vec<PolicyConfig>,
}

impl Default for PurgeSection {
    fn default() -> Self {
        Self {
            enabled: false,
            trash_dir: ".fsobserver-trash".into(),
            workers: 2,
            max_removals_per_sec: 0,
            policies: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub name: String,
    /// Absolute directory everything the policy deletes lies beneath.
    pub root: PathBuf,
    /// Globs relative to the root (`*` stays within one path component), e.g. `worktrees/*`.
    #[serde(rename = "match")]
    pub matches: Vec<String>,
    /// Siblings removed together with a matched entry; `{}` is the entry's name, e.g.
    /// `{}.cred.sh`, `{}-artifacts`. The group goes only if every member qualifies.
    pub group: Vec<String>,
    /// Minimum age: nothing in the entry (recursively) changed for this long. Must be > 0.
    pub min_age_secs: u64,
    /// `mtime` or `ctime`: which timestamp ages an entry.
    pub age_from: String,
    /// Keep entries a live process has open (any fd or cwd inside).
    pub require_no_open_files: bool,
    /// Keep entries holding a flock/OFD/POSIX lock (`/proc/locks`).
    pub require_no_locks: bool,
    /// Keep entries whose owner is alive: the holder the lock guard tracks for a lock inside,
    /// or a pid written in a `*.lock`/`*.pid` file inside.
    pub require_owner_dead: bool,
    /// Per run.
    pub max_items: usize,
    /// Per run; 0 = no limit.
    pub max_bytes: u64,
    /// Stop selecting once free space (and free inodes) would be back at this percentage;
    /// 0 = take everything eligible (up to the limits).
    pub target_free_percent: f64,
    /// Automatic runs (triggers) are allowed for this policy.
    pub auto: bool,
    /// The policy may delete at all: automatic runs delete, and manual runs may when
    /// `manual_execute` allows it. Without it every run is a dry run, whoever asks.
    pub execute: bool,
    /// Manual runs (`POST /purge?execute=true`, `observer purge --execute`) may delete; needs
    /// `execute` too.
    pub manual_execute: bool,
    /// Seconds between automatic runs.
    pub cooldown_secs: u64,
    pub trigger: TriggerConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            root: PathBuf::new(),
            matches: Vec::new(),
            group: Vec::new(),
            min_age_secs: 0,
            age_from: "mtime".into(),
            require_no_open_files: true,
            require_no_locks: true,
            require_owner_dead: true,
            max_items: 1000,
            max_bytes: 0,
            target_free_percent: 0.0,
            auto: false,
            execute: false,
            manual_execute: false,
            cooldown_secs: 300,
            trigger: TriggerConfig::default(),
        }
    }
}

/// When an automatic run starts (any condition that is set; 0 = unset).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TriggerConfig {
    /// ENOSPC + EDQUOT failures on the root's filesystem over the last minute.
    pub errors_per_min: u64,
    pub free_below_percent: f64,
    pub inodes_below_percent: f64,
    pub time_to_full_below_secs: f64,
}

impl TriggerConfig {
    pub fn is_set(&self) -> bool {
        self.errors_per_min > 0
            || self.free_below_percent > 0.0
            || self.inodes_below_percent > 0.0
            || self.time_to_full_below_secs > 0.0
    }
}
