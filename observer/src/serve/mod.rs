//! Stage 5 — serve: what the daemon shows — the HTTP API (health, metrics, top, dump, events,
//! locks, purge, report) and event lines on stdout — read from the stages' own state through [`Api`].

pub mod auth;
pub mod door;
pub mod http;
mod http_purge;
pub mod metrics;
pub mod report;
pub mod stdout;

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, atomic::Ordering};

use bytes::Bytes;

use crate::{
    act::purge::Purger,
    analyze::{Analysis, capacity::Capacity, locks::LockEvent},
    config::Config,
    events::{EventCounters, kind::EventKind},
    kernel::{
        counters::{KernelCounters, StatsSnapshot},
        reader::ReaderStats,
    },
    node::{
        NodeInfo,
        clock::{Clock, now_rfc3339, now_unix_ns},
    },
    record::{Record, Sink, published::Published, recorder::Window},
};
use stdout::Stdout;

/// `/dump` answers rendered at once; more are answered 503 (a dump is a rare operator action;
/// many at once would only take CPU from the pipeline).
pub const DUMPS_AT_ONCE: usize = 2;

/// The stages' state as the daemon's outputs read it. Each stage owns its part (and its lock);
/// nothing here is state of its own.
pub struct Api {
    pub config: Config,
    pub info: NodeInfo,
    pub clock: Clock,
    pub analysis: Mutex<Analysis>,
    pub capacity: Mutex<Capacity>,
    pub record: Record,
    pub kernel: Mutex<KernelCounters>,
    pub reader: Arc<ReaderStats>,
    pub events: Arc<EventCounters>,
    pub stdout: Stdout,
    /// Emergency purge (set once at start-up; off when disabled or refused).
    pub purge: OnceLock<Purger>,
    /// More sinks for published events, after the recorder and stdout.
    pub sinks: Vec<Box<dyn Sink>>,
    /// `/events` and `/dump` streams (`http.max_streams`).
    pub streams: Arc<tokio::sync::Semaphore>,
    /// Dumps rendered at once (each walks the whole flight recorder): [`DUMPS_AT_ONCE`].
    pub dumps: Arc<tokio::sync::Semaphore>,
    /// Connection outcomes of the API door and the metrics door.
    pub doors: [Arc<door::DoorCounters>; 2],
}

impl Api {
    /// Publishes events, in order, to every sink: the recorder and `/events`, stdout (when
    /// `output.stdout`), then the plugged-in sinks.
    pub fn publish(&self, batch: &[Arc<Published>]) {
        Sink::publish(&self.record, batch);
        if self.config.file.output.stdout {
            self.stdout.publish(batch);
        }
        for s in &self.sinks {
            s.publish(batch);
        }
    }

    pub fn analysis(&self) -> MutexGuard<'_, Analysis> {
        self.analysis.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn capacity(&self) -> MutexGuard<'_, Capacity> {
        self.capacity.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn kernel(&self) -> MutexGuard<'_, KernelCounters> {
        self.kernel.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats_for(None)
    }

    /// [`Self::stats`] with `deletes_by_process` holding process `pid`'s row alone.
    pub fn stats_for(&self, pid: Option<u32>) -> StatsSnapshot {
        self.kernel().snapshot(
            &self.reader,
            self.events.decode_errors.load(Ordering::Relaxed),
            pid,
        )
    }

    /// Lock-guard events into the recorder, `/events` and stdout; then the deletion sampling
    /// follows the locks held. (The consumer publishes the lock events it makes itself, in
    /// order with the syscall events around them.)
    pub fn publish_locks(&self, events: Vec<LockEvent>) {
        if events.is_empty() {
            return;
        }
        let published: Vec<Arc<Published>> = events.iter().map(lock_published).collect();
        self.publish(&published);
        self.sync_delete_sample();
    }

    /// Re-checks lock holders now and publishes `holder-dead` transitions.
    pub fn check_lock_holders(&self) {
        let events = self.analysis().check_holders(now_unix_ns());
        self.publish_locks(events);
    }

    /// While any lock is held (healthy or heartbeat-failing), every successful deletion gets a
    /// detail record, so a steal is never sampled away; otherwise the configured sampling
    /// applies (no per-deletion cost on nodes without locks).
    pub fn sync_delete_sample(&self) {
        let mut analysis = self.analysis();
        let want = if analysis.locks_held() > 0 {
            1
        } else {
            self.config.file.probes.delete_sample
        };
        if self.kernel().set_delete_sample(want) {
            analysis.agg.leaks.set_delete_weight(want);
            tracing::debug!(delete_sample = want, "deletion sampling changed");
        }
    }

    /// The flight recorder's contents and the header a dump starts with (node, kernel, probe
    /// mode, window, loss counters), and the report object last; write them with
    /// [`Window::write_to`]. `reason`: `request` or `burst` (with `trigger` details). Reads
    /// every kernel map: call it off the async threads.
    pub fn dump(
        &self,
        reason: &str,
        trigger: Option<serde_json::Value>,
    ) -> (serde_json::Value, Window) {
        let stats = self.stats();
        let capacity = self.capacity().rows();
        let top = self.analysis().agg.top(self.config.file.aggregate.top_k);
        let snap = self.record.snapshot();
        let (from, to) = snap.window.unwrap_or((0, 0));
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
            "events": snap.events,
            "losses": {
                "kernel_ring_drops": stats.kernel_ring_drops,
                "userspace_queue_drops": stats.userspace_queue_drops,
                "decode_errors": stats.decode_errors,
                "recorder_rotated": snap.rotated,
                "stream_lagged": self.record.counters.stream_lagged.load(Ordering::Relaxed),
            },
            "stats": stats,
            "capacity": capacity,
            "top": top,
        });
        let mut window = snap.contents;
        // What `observer report --from-dump` writes from (no purge run: a dump only reads).
        window.report = Some(report::build(self, &report::Scope::default()));
        (header, window)
    }
}

/// A lock-guard event as published.
pub fn lock_published(ev: &LockEvent) -> Arc<Published> {
    let line = serde_json::to_string(ev).unwrap_or_default();
    if ev.severity != "info" {
        tracing::warn!(event = ev.event, path = %ev.lock.path, "lock guard");
    }
    let holder = ev.lock.holder.as_ref();
    Arc::new(Published::ready(
        ev.time_unix_ns,
        EventKind::Lock,
        (
            ev.lock.last_failure.as_ref().map_or(0, |f| f.errno),
            holder.map_or(0, |h| h.pid),
        ),
        holder.map(|h| h.comm.clone()).unwrap_or_default(),
        ev.lock.path.clone(),
        Bytes::from(line),
    ))
}

impl crate::act::purge::trigger::Watch for Api {
    fn purger(&self) -> Option<&Purger> {
        self.purge.get()
    }

    fn space_errors(&self, dev: u32) -> u64 {
        self.analysis().space_errors(dev)
    }

    fn time_to_full(&self, st_dev: u64) -> Option<f64> {
        self.capacity()
            .rows()
            .into_iter()
            .filter(|r| r.st_dev == Some(st_dev))
            .flat_map(|r| [r.bytes_full_in_secs, r.inodes_full_in_secs])
            .flatten()
            .reduce(f64::min)
    }
}
