//! Daemon sections of the configuration: outputs, HTTP API, aggregation, capacity sampling and
//! the flight recorder, with their defaults and checks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, FileConfig, Filters};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSection {
    /// JSON Lines events and stats on stdout.
    pub stdout: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// `host:port` of the HTTP API; empty = no HTTP server.
    pub listen: String,
    /// Events buffered per `/events` client before it is told it lagged.
    pub stream_buffer: usize,
    /// Also serve the API on this Unix socket (mode 0600); empty = no socket.
    pub unix_socket: PathBuf,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregateSection {
    /// Directory levels below the mount point a path is rolled up to.
    pub path_depth: usize,
    pub max_paths: usize,
    pub max_processes: usize,
    pub max_workloads: usize,
    /// Keys per table exported as metrics and shown by `/top` (the rest is "other").
    pub top_k: usize,
    pub pods_log_dir: PathBuf,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapacitySection {
    /// Filesystems (mount points) whose free space is sampled; empty = `filters.watch_mounts`.
    pub mounts: Vec<PathBuf>,
    pub sample_interval_ms: u64,
    pub window_secs: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecorderSection {
    pub max_events: usize,
    pub max_bytes: usize,
    /// Per-second aggregate snapshots kept.
    pub snapshot_secs: usize,
    /// Where a dump is written on an ENOSPC/EDQUOT burst; empty = never.
    pub dump_dir: PathBuf,
    /// ENOSPC/EDQUOT events within one second that make a burst.
    pub burst_errors: u64,
    /// Seconds after a burst dump before another burst can trigger one.
    pub burst_cooldown_secs: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeakSection {
    /// Sliding window over which creates and deletes are compared.
    pub window_secs: u64,
    /// Net new entries over the window that make a directory a suspect.
    pub min_net: u64,
    /// Creates must also be at least this many times the deletes.
    pub ratio: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocksSection {
    /// Track locks (while one is held the kernel reports every successful deletion in detail,
    /// so a steal is never sampled away).
    pub enabled: bool,
    /// Lock paths (`*` within a directory, `**` across), e.g. "/var/lib/app/**/*.lock".
    pub globs: Vec<String>,
    /// Also learn locks from a steady refresh by one process.
    pub learn: bool,
    /// When a lock looks stale to contenders; 0 = infer (5 x the observed interval).
    pub stale_timeout_secs: f64,
    pub max_locks: usize,
    /// How often holders are checked for being alive.
    pub check_interval_ms: u64,
}

impl Default for LocksSection {
    fn default() -> Self {
        Self {
            enabled: true,
            globs: Vec::new(),
            learn: true,
            stale_timeout_secs: 0.0,
            max_locks: 1024,
            check_interval_ms: 250,
        }
    }
}

impl LocksSection {
    /// The compiled globs.
    pub fn glob_set(&self) -> Result<globset::GlobSet, ConfigError> {
        let mut b = globset::GlobSetBuilder::new();
        for g in &self.globs {
            let glob = globset::GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .map_err(|e| invalid(format!("locks.globs: {g:?}: {}", e.kind())))?;
            b.add(glob);
        }
        b.build().map_err(|e| invalid(format!("locks.globs: {e}")))
    }
}

impl Default for LeakSection {
    fn default() -> Self {
        Self {
            window_secs: 600,
            min_net: 1000,
            ratio: 2.0,
        }
    }
}

impl Default for OutputSection {
    fn default() -> Self {
        Self { stdout: true }
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            stream_buffer: 8192,
            unix_socket: PathBuf::new(),
        }
    }
}

impl Default for AggregateSection {
    fn default() -> Self {
        Self {
            path_depth: 2,
            max_paths: 4096,
            max_processes: 2048,
            max_workloads: 512,
            top_k: 20,
            pods_log_dir: "/var/log/pods".into(),
        }
    }
}

impl Default for CapacitySection {
    fn default() -> Self {
        Self {
            mounts: Vec::new(),
            sample_interval_ms: 1000,
            window_secs: 60,
        }
    }
}

impl Default for RecorderSection {
    fn default() -> Self {
        Self {
            max_events: 20_000,
            max_bytes: 16 << 20,
            snapshot_secs: 300,
            dump_dir: PathBuf::new(),
            burst_errors: 20,
            burst_cooldown_secs: 600,
        }
    }
}

impl FileConfig {
    /// Mounts whose capacity is sampled.
    pub fn capacity_mounts(&self) -> Vec<PathBuf> {
        if self.capacity.mounts.is_empty() {
            self.filters.watch_mounts.clone()
        } else {
            self.capacity.mounts.clone()
        }
    }
}

fn invalid(msg: String) -> ConfigError {
    ConfigError::Invalid(msg)
}

/// Checks the daemon sections (called by [`FileConfig::validate`]).
pub fn validate(f: &FileConfig, filters: &Filters) -> Result<(), ConfigError> {
    use std::os::unix::fs::MetadataExt as _;
    if !f.http.listen.is_empty() && f.http.listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(invalid(format!(
            "http.listen = {:?}: expected host:port such as 127.0.0.1:9464 (empty disables)",
            f.http.listen
        )));
    }
    let a = &f.aggregate;
    for (name, v) in [
        ("aggregate.max_paths", a.max_paths),
        ("aggregate.max_processes", a.max_processes),
        ("aggregate.max_workloads", a.max_workloads),
        ("aggregate.top_k", a.top_k),
        ("recorder.max_events", f.recorder.max_events),
        ("recorder.max_bytes", f.recorder.max_bytes),
        ("http.stream_buffer", f.http.stream_buffer),
    ] {
        if v == 0 {
            return Err(invalid(format!("{name} must be at least 1")));
        }
    }
    f.locks.glob_set()?;
    if f.locks.max_locks == 0 || f.locks.check_interval_ms < 10 || f.locks.stale_timeout_secs < 0.0
    {
        return Err(invalid(
            "locks: max_locks >= 1, check_interval_ms >= 10 and stale_timeout_secs >= 0".into(),
        ));
    }
    // `ratio >= 1.0` is false for NaN too.
    if f.leak.window_secs == 0 || f.leak.ratio.partial_cmp(&1.0).is_none_or(|o| o.is_lt()) {
        return Err(invalid(
            "leak.window_secs must be at least 1 and leak.ratio at least 1.0".into(),
        ));
    }
    if f.capacity.sample_interval_ms < 10 {
        return Err(invalid(
            "capacity.sample_interval_ms must be at least 10".into(),
        ));
    }
    for m in f.capacity_mounts() {
        std::fs::metadata(&m)
            .map_err(|e| invalid(format!("capacity.mounts: {}: {e}", m.display())))?;
    }
    let dir = &f.recorder.dump_dir;
    if !dir.as_os_str().is_empty() {
        let meta = std::fs::metadata(dir)
            .map_err(|e| invalid(format!("recorder.dump_dir: {}: {e}", dir.display())))?;
        if !meta.is_dir() {
            return Err(invalid(format!(
                "recorder.dump_dir: {} is not a directory",
                dir.display()
            )));
        }
        nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).map_err(|e| {
            invalid(format!(
                "recorder.dump_dir: {} is not writable: {e}",
                dir.display()
            ))
        })?;
        // Never add to the filesystems being watched for filling up.
        let dev = crate::node::kernel_dev(meta.dev());
        let watched_caps = f
            .capacity_mounts()
            .iter()
            .filter_map(|m| std::fs::metadata(m).ok())
            .map(|m| crate::node::kernel_dev(m.dev()))
            .collect::<Vec<_>>();
        if filters.devs.contains(&dev) || watched_caps.contains(&dev) {
            return Err(invalid(format!(
                "recorder.dump_dir: {} is on a watched filesystem; dumps must go elsewhere",
                dir.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::FileConfig;

    fn err(text: &str) -> String {
        FileConfig::parse(text, "t")
            .and_then(FileConfig::validate)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn daemon_sections_are_checked() {
        assert!(err("[http]\nlisten = \"nope\"").contains("http.listen"));
        assert!(err("[aggregate]\ntop_k = 0").contains("top_k"));
        assert!(err("[recorder]\ndump_dir = \"/no/such\"").contains("dump_dir"));
        let d = tempfile::tempdir().unwrap();
        let text = format!(
            "[filters]\nwatch_mounts = [\"{0}\"]\n[recorder]\ndump_dir = \"{0}\"",
            d.path().display()
        );
        assert!(err(&text).contains("watched filesystem"));
        let ok = format!("[recorder]\ndump_dir = \"{}\"", d.path().display());
        FileConfig::parse(&ok, "t").unwrap().validate().unwrap();
    }
}
