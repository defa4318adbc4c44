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
    /// The API door (`host:port`): events, dumps, top, locks, purge. Loopback callers must be
    /// root (or the daemon's user); any other address needs `tokens_file`. Empty = none.
    pub listen: String,
    /// The API door on a Unix socket (mode 0600; peers must be root or the daemon's user).
    pub unix_socket: PathBuf,
    /// The metrics door (`host:port`): only `/metrics` and `/healthz`, for Prometheus and
    /// probes; may face the pod network. Empty = none (the API door serves them too).
    pub metrics_listen: String,
    /// Bearer tokens (`name token` per line, `#` comments) accepted on the API door from any
    /// address, e.g. a mounted Secret. Empty = none.
    pub tokens_file: PathBuf,
    /// Events buffered per `/events` client before it is told it lagged.
    pub stream_buffer: usize,
    /// Connections held open per door; more are closed as they arrive.
    pub max_connections: usize,
    /// `/events` and `/dump` streams at once (all doors); more are answered 503.
    pub max_streams: usize,
    /// A request's headers (and, on an idle kept-alive connection, the next request's) must
    /// arrive within this.
    pub header_timeout_ms: u64,
    /// A response nobody reads for this long (its writes make no progress) is cut off.
    pub stall_timeout_ms: u64,
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
    /// Filesystems (mount points) whose free space is sampled; empty = `filters.watch_mounts`,
    /// and when that is empty too, every real filesystem on the node (see `node::mounts`).
    pub mounts: Vec<PathBuf>,
    /// At most this many filesystems are sampled when they are found rather than listed.
    pub max_mounts: usize,
    pub sample_interval_ms: u64,
    pub window_secs: u64,
    /// How often the space of deleted-but-open files is counted (a pass over `/proc/*/fd`);
    /// 0 = never.
    pub deleted_open_secs: u64,
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
    /// Burst dumps kept in `dump_dir` (the oldest of the observer's own are removed first).
    pub dump_max_files: usize,
    /// Bytes of burst dumps kept in `dump_dir`.
    pub dump_max_bytes: u64,
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
pub struct GrowthSection {
    /// Count every create exactly in the kernel, per directory, process and filesystem.
    pub enabled: bool,
    /// How often the kernel's counts are read.
    pub interval_ms: u64,
    /// Growth rates are taken over this window (and the one before).
    pub window_secs: u64,
    /// A directory is a culprit when what it holds beyond the culprits below it is at least
    /// this share of its filesystem's net growth...
    pub culprit_share: f64,
    /// ...and at least this many entries.
    pub culprit_min_net: u64,
    /// How often the culprit directories' bytes are measured (a bounded `du`); 0 = never.
    pub bytes_interval_secs: u64,
    /// Entries looked at per measurement pass at most (beyond, bytes are a lower bound).
    pub bytes_max_entries: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocksSection {
    /// Track locks (while one is held the kernel reports every successful deletion in detail,
    /// so a steal is never sampled away).
    pub enabled: bool,
    /// Lock paths (`*` within a directory, `**` across), e.g. "/var/lib/app/**/*.lock".
    pub globs: Vec<String>,
    /// Lock names by convention (`*.lock`, `*.lck`, `LOCK`, `*.pid`) are locks without a glob,
    /// and the kernel reports acquisitions of the first three (mkdir, `O_CREAT|O_EXCL`, link).
    pub conventions: bool,
    /// Any other path is a lock once one process refreshes it twice (or refreshes it, then
    /// fails to).
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
            conventions: true,
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

impl Default for GrowthSection {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: 2000,
            window_secs: 300,
            culprit_share: 0.05,
            culprit_min_net: 50,
            bytes_interval_secs: 60,
            bytes_max_entries: 200_000,
        }
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
            unix_socket: PathBuf::new(),
            metrics_listen: String::new(),
            tokens_file: PathBuf::new(),
            stream_buffer: 8192,
            max_connections: 256,
            max_streams: 16,
            header_timeout_ms: 5000,
            stall_timeout_ms: 30_000,
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
            max_mounts: 64,
            sample_interval_ms: 1000,
            window_secs: 60,
            deleted_open_secs: 15,
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
            dump_max_files: 8,
            dump_max_bytes: 48 << 20,
        }
    }
}

impl FileConfig {
    /// Whether the filesystems sampled for capacity are found on the node (none listed).
    pub fn capacity_found(&self) -> bool {
        self.capacity.mounts.is_empty() && self.filters.watch_mounts.is_empty()
    }

    /// Mounts whose capacity is sampled (listed ones: see [`FileConfig::capacity_found`]).
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

/// The doors: addresses parse, and an API door off loopback has a credential.
fn check_http(h: &HttpSection) -> Result<(), ConfigError> {
    for (key, v) in [
        ("http.listen", &h.listen),
        ("http.metrics_listen", &h.metrics_listen),
    ] {
        if !v.is_empty() && v.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(format!(
                "{key} = {v:?}: expected host:port such as 127.0.0.1:9464 (empty disables)"
            )));
        }
    }
    let api = h.listen.parse::<std::net::SocketAddr>().ok();
    if api.is_some_and(|a| !a.ip().is_loopback()) && h.tokens_file.as_os_str().is_empty() {
        return Err(invalid(format!(
            "http.listen = {:?} serves events, dumps and purge beyond this host: set \
             http.tokens_file, or serve Prometheus from http.metrics_listen and keep the API on \
             loopback",
            h.listen
        )));
    }
    if !h.tokens_file.as_os_str().is_empty() {
        super::tokens::Tokens::load(&h.tokens_file).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(())
}

/// Every size and interval between a floor and a ceiling: a typo cannot exhaust memory or
/// spin a thread.
fn check_sizes(f: &FileConfig) -> Result<(), ConfigError> {
    const K: u64 = 1000;
    const M: u64 = K * K;
    let (a, r, h) = (&f.aggregate, &f.recorder, &f.http);
    let bounds: [(&str, u64, u64, u64); 27] = [
        ("aggregate.path_depth", a.path_depth as u64, 0, 64),
        ("aggregate.max_paths", a.max_paths as u64, 1, M),
        ("aggregate.max_processes", a.max_processes as u64, 1, M),
        (
            "aggregate.max_workloads",
            a.max_workloads as u64,
            1,
            100 * K,
        ),
        ("aggregate.top_k", a.top_k as u64, 1, K),
        ("recorder.max_events", r.max_events as u64, 1, 10 * M),
        ("recorder.max_bytes", r.max_bytes as u64, 1, 1 << 30),
        ("recorder.snapshot_secs", r.snapshot_secs as u64, 1, 86_400),
        (
            "recorder.dump_max_files",
            r.dump_max_files as u64,
            1,
            10 * K,
        ),
        ("recorder.dump_max_bytes", r.dump_max_bytes, 1, 1 << 40),
        ("http.stream_buffer", h.stream_buffer as u64, 1, M),
        ("http.max_connections", h.max_connections as u64, 1, 65_536),
        ("http.max_streams", h.max_streams as u64, 1, 1024),
        ("http.header_timeout_ms", h.header_timeout_ms, 100, 600 * K),
        ("http.stall_timeout_ms", h.stall_timeout_ms, 100, 3600 * K),
        ("locks.max_locks", f.locks.max_locks as u64, 1, M),
        (
            "locks.check_interval_ms",
            f.locks.check_interval_ms,
            10,
            3600 * K,
        ),
        (
            "pipeline.queue_capacity",
            f.pipeline.queue_capacity as u64,
            1,
            10 * M,
        ),
        (
            "capacity.sample_interval_ms",
            f.capacity.sample_interval_ms,
            10,
            3600 * K,
        ),
        (
            "capacity.window_secs",
            f.capacity.window_secs,
            1,
            7 * 86_400,
        ),
        ("leak.window_secs", f.leak.window_secs, 1, 7 * 86_400),
        ("growth.interval_ms", f.growth.interval_ms, 100, 3600 * K),
        ("growth.window_secs", f.growth.window_secs, 1, 7 * 86_400),
        (
            "growth.culprit_min_net",
            f.growth.culprit_min_net,
            1,
            1 << 40,
        ),
        ("capacity.max_mounts", f.capacity.max_mounts as u64, 1, 4096),
        (
            "growth.bytes_interval_secs",
            f.growth.bytes_interval_secs,
            0,
            86_400,
        ),
        (
            "growth.bytes_max_entries",
            f.growth.bytes_max_entries,
            1,
            100 * M,
        ),
    ];
    for (key, v, min, max) in bounds {
        if v < min || v > max {
            return Err(invalid(format!(
                "{key} = {v}: must be at least {min} and at most {max}"
            )));
        }
    }
    Ok(())
}

/// Checks the daemon sections (called by [`FileConfig::validate`]).
pub fn validate(f: &FileConfig, filters: &Filters) -> Result<(), ConfigError> {
    use std::os::unix::fs::MetadataExt as _;
    check_http(&f.http)?;
    check_sizes(f)?;
    f.locks.glob_set()?;
    // Comparisons that are false for NaN too.
    if !(f.locks.stale_timeout_secs >= 0.0 && f.locks.stale_timeout_secs <= 86_400.0) {
        return Err(invalid(
            "locks.stale_timeout_secs: must be at least 0 and at most 86400".into(),
        ));
    }
    if !(f.growth.culprit_share > 0.0 && f.growth.culprit_share <= 1.0) {
        return Err(invalid(
            "growth.culprit_share: must be above 0 and at most 1".into(),
        ));
    }
    if !(f.leak.ratio >= 1.0 && f.leak.ratio <= 1e6) {
        return Err(invalid(
            "leak.ratio: must be at least 1.0 and at most 1000000".into(),
        ));
    }
    for m in f.capacity_mounts() {
        match crate::node::fsio::metadata(&f.here(&m)) {
            Ok(_) => {}
            // Sampled and reported as not answering: a hung filesystem must not keep the
            // observer from starting (a crash loop would hide every other filesystem too).
            Err(e) if e.is_hung() => {
                tracing::warn!(mount = %crate::node::text::Printable(&m.display().to_string()), "capacity.mounts: {e}");
            }
            Err(e) => return Err(invalid(format!("capacity.mounts: {}: {e}", m.display()))),
        }
    }
    let dir = &f.recorder.dump_dir;
    if !dir.as_os_str().is_empty() {
        let meta = crate::node::fsio::metadata(dir)
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
            .filter_map(|m| crate::node::fsio::metadata(&f.here(m)).ok())
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
