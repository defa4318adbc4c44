//! Shared daemon state: what the pipeline writes and the HTTP API, metrics, stats ticks and
//! dumps read. Every lock is held briefly; nothing here blocks on I/O.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, UNIX_EPOCH},
};

use tokio::sync::broadcast;

use crate::{
    analyze::{aggregate::Aggregator, capacity::Capacity},
    config::Config,
    kernel::counters::{KernelCounters, StatsSnapshot},
    kernel::reader::ReaderStats,
    node::mounts::MountTable,
    record::published::{Clock, Published},
    record::recorder::Recorder,
};

/// Static facts about this observer, for dump headers and build info.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeInfo {
    pub node: String,
    pub kernel: String,
    pub probe_mode: &'static str,
    pub version: &'static str,
}

impl NodeInfo {
    pub fn new(probe_mode: &'static str) -> Self {
        let uts = nix::sys::utsname::uname().ok();
        let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uts.as_ref()
                .map(|u| f(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        Self {
            node: std::env::var("NODE_NAME").unwrap_or_else(|_| field(|u| u.nodename())),
            kernel: field(|u| u.release()),
            probe_mode,
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// Pipeline state guarded together (one lock per consumed batch).
pub struct State {
    pub agg: Aggregator,
    pub recorder: Recorder,
    pub mounts: MountTable,
    /// Lock guard (`locks.enabled`).
    pub locks: Option<crate::analyze::locks::LockTracker>,
    /// ENOSPC/EDQUOT events per filesystem (kernel dev) since start, for purge triggers.
    pub space_errors: std::collections::HashMap<u32, u64>,
}

/// Counters of the observer's own work.
#[derive(Debug, Default)]
pub struct SelfCounters {
    pub decode_errors: AtomicU64,
    /// Absolute-path events outside the watched mounts (filtered here, not in the kernel).
    pub filtered: AtomicU64,
    /// Events a slow `/events` client skipped.
    pub stream_lagged: AtomicU64,
    pub dumps_written: AtomicU64,
    pub dumps_failed: AtomicU64,
    /// Burst dumps not written because the dump directory shares the failing filesystem.
    pub dumps_skipped: AtomicU64,
    /// Lines that could not be written to stdout.
    pub stdout_failures: AtomicU64,
}

pub struct Hub {
    pub config: Config,
    pub info: NodeInfo,
    pub clock: Clock,
    pub kernel: Mutex<KernelCounters>,
    pub reader: Arc<ReaderStats>,
    pub own: SelfCounters,
    pub state: Mutex<State>,
    pub capacity: Mutex<Capacity>,
    pub events: broadcast::Sender<Arc<Published>>,
    /// The deletion sampling the kernel uses now (1 while locks are held: see
    /// [`Hub::sync_delete_sample`]).
    pub delete_sample_now: std::sync::atomic::AtomicU32,
    /// Emergency purge (set once at start-up; off when disabled or refused).
    pub purge: std::sync::OnceLock<crate::act::purge::Purger>,
}

impl Hub {
    pub fn new(
        config: Config,
        info: NodeInfo,
        kernel: KernelCounters,
        reader: Arc<ReaderStats>,
    ) -> Self {
        let f = &config.file;
        let agg = Aggregator::new(crate::analyze::aggregate::Limits {
            path_depth: f.aggregate.path_depth,
            max_paths: f.aggregate.max_paths,
            max_processes: f.aggregate.max_processes,
            max_workloads: f.aggregate.max_workloads,
            pods_dir: f.aggregate.pods_log_dir.clone(),
            leak: crate::analyze::leak::LeakConfig {
                window: Duration::from_secs(f.leak.window_secs),
                min_net: f.leak.min_net,
                ratio: f.leak.ratio,
                create_sample: f.probes.create_sample,
                delete_sample: f.probes.delete_sample,
            },
        });
        let recorder = Recorder::new(crate::record::recorder::RecorderLimits {
            max_events: f.recorder.max_events,
            max_bytes: f.recorder.max_bytes,
            max_snapshots: f.recorder.snapshot_secs.max(1),
        });
        let capacity = Capacity::new(
            &f.capacity_mounts(),
            Duration::from_secs(f.capacity.window_secs.max(1)),
        );
        let (events, _) = broadcast::channel(f.http.stream_buffer);
        Self {
            info,
            clock: Clock::new(),
            kernel: Mutex::new(kernel),
            reader,
            own: SelfCounters::default(),
            state: Mutex::new(State {
                agg,
                recorder,
                mounts: MountTable::load(),
                locks: f.locks.enabled.then(|| {
                    crate::analyze::locks::LockTracker::new(
                        f.locks.glob_set().unwrap_or_default(),
                        (f.locks.stale_timeout_secs > 0.0).then_some(f.locks.stale_timeout_secs),
                        f.locks.max_locks,
                        f.locks.learn,
                    )
                }),
                space_errors: Default::default(),
            }),
            capacity: Mutex::new(capacity),
            events,
            delete_sample_now: std::sync::atomic::AtomicU32::new(config.file.probes.delete_sample),
            purge: std::sync::OnceLock::new(),
            config,
        }
    }

    /// While any lock is held (healthy or heartbeat-failing), every successful deletion gets a
    /// detail record, so a steal is never sampled away; otherwise the configured sampling
    /// applies (no per-deletion cost on nodes without locks). Called with the state locked.
    pub fn sync_delete_sample(&self, st: &mut State) {
        let held = st.locks.as_ref().is_some_and(|t| t.held() > 0);
        let want = if held {
            1
        } else {
            self.config.file.probes.delete_sample
        };
        if self.delete_sample_now.swap(want, Ordering::Relaxed) != want {
            self.kernel
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .set_delete_sample(want);
            st.agg.leaks.set_delete_weight(want);
            tracing::debug!(delete_sample = want, "deletion sampling changed");
        }
    }

    pub fn stats(&self) -> StatsSnapshot {
        let k = self.kernel.lock().unwrap_or_else(|p| p.into_inner());
        k.snapshot(&self.reader, self.own.decode_errors.load(Ordering::Relaxed))
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn capacity(&self) -> std::sync::MutexGuard<'_, Capacity> {
        self.capacity.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The flight recorder as JSON Lines, after a header naming the node, kernel, probe mode,
    /// window and loss counters. `reason`: `request` or `burst` (with `trigger` details).
    pub fn dump(&self, reason: &str, trigger: Option<serde_json::Value>) -> Vec<u8> {
        let stats = self.stats();
        let capacity = self.capacity().rows();
        let st = self.state();
        let (from, to) = st.recorder.window().unwrap_or((0, 0));
        let o = &self.own;
        let header = serde_json::json!({
            "type": "dump-header",
            "reason": reason,
            "created": now_rfc3339(),
            "node": self.info.node,
            "kernel": self.info.kernel,
            "probe_mode": self.info.probe_mode,
            "version": self.info.version,
            "trigger": trigger,
            "window_start_unix_ns": from,
            "window_end_unix_ns": to,
            "events": st.recorder.len(),
            "losses": {
                "kernel_ring_drops": stats.kernel_ring_drops,
                "userspace_queue_drops": stats.userspace_queue_drops,
                "decode_errors": stats.decode_errors,
                "recorder_rotated": st.recorder.rotated,
                "stream_lagged": o.stream_lagged.load(Ordering::Relaxed),
            },
            "stats": stats,
            "capacity": capacity,
            "top": st.agg.top(self.config.file.aggregate.top_k),
        });
        let window = st.recorder.window_copy();
        drop(st);
        window.dump(&header)
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Unix time now in nanoseconds.
pub fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
