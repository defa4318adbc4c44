//! Stage 4 — record: events as published (the flight recorder and the `/events` stream, kept
//! consistent under one lock), and dumps of the recorder.

pub mod published;
pub mod recorder;

use std::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicU64, Ordering},
};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::events::filter::Filter;
use published::Published;
use recorder::{Recorder, RecorderLimits, Window};

/// Where published events go. The consumer hands each batch, in order, to every sink: the
/// flight recorder with the `/events` stream ([`Record`]), stdout, and whatever is plugged in
/// later (a report, an exporter) without touching the consumer.
pub trait Sink: Send + Sync {
    fn publish(&self, batch: &[Arc<Published>]);
}

impl Sink for Record {
    fn publish(&self, batch: &[Arc<Published>]) {
        Record::publish(self, batch.iter().cloned());
    }
}

/// What this stage counts about itself.
#[derive(Debug, Default)]
pub struct RecordCounters {
    /// Events a slow `/events` client skipped.
    pub stream_lagged: AtomicU64,
    pub dumps_written: AtomicU64,
    pub dumps_failed: AtomicU64,
    /// Burst dumps not written because the dump directory shares the failing filesystem.
    pub dumps_skipped: AtomicU64,
    /// Old burst dumps removed to keep `recorder.dump_max_files` / `dump_max_bytes`.
    pub dumps_removed: AtomicU64,
}

/// The flight recorder and the live stream.
pub struct Record {
    recorder: Mutex<Recorder>,
    stream: broadcast::Sender<Arc<Published>>,
    pub counters: RecordCounters,
}

/// The recorder's contents at one moment, for a dump.
pub struct Snapshot {
    /// `(oldest, newest)` event times.
    pub window: Option<(u64, u64)>,
    pub events: usize,
    pub rotated: u64,
    pub contents: Window,
}

impl Record {
    pub fn new(limits: RecorderLimits, stream_buffer: usize) -> Self {
        let (stream, _) = broadcast::channel(stream_buffer);
        Self {
            recorder: Mutex::new(Recorder::new(limits)),
            stream,
            counters: RecordCounters::default(),
        }
    }

    fn recorder(&self) -> MutexGuard<'_, Recorder> {
        self.recorder.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Into the flight recorder, and to the `/events` clients when there are any, in order.
    /// Under the recorder's lock: a client subscribing under the same lock gets each event
    /// exactly once (from the backlog or live).
    pub fn publish(&self, events: impl IntoIterator<Item = Arc<Published>>) {
        let clients = self.stream.receiver_count() > 0;
        let mut rec = self.recorder();
        for p in events {
            if clients {
                // Rendered once for every client (and counted in the recorder's bytes).
                p.line();
            }
            rec.push(p.clone());
            if clients {
                let _: Result<usize, _> = self.stream.send(p);
            }
        }
    }

    /// A live subscription, and (with `since`) the recorded events at or after it that pass
    /// `filter` — together, so no event is missed or seen twice.
    pub fn subscribe(
        &self,
        since: Option<u64>,
        filter: &Filter,
    ) -> (broadcast::Receiver<Arc<Published>>, Vec<Arc<Published>>) {
        let rec = self.recorder();
        let live = self.stream.subscribe();
        let backlog = match since {
            Some(t) => rec
                .events_since(t)
                .filter(|e| filter.matches(e.as_ref()))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        (live, backlog)
    }

    /// Connected `/events` clients.
    pub fn clients(&self) -> usize {
        self.stream.receiver_count()
    }

    /// A skipped-ahead client missed `n` events.
    pub fn lagged(&self, n: u64) {
        self.counters.stream_lagged.fetch_add(n, Ordering::Relaxed);
    }

    pub fn push_snapshot(&self, line: Bytes) {
        self.recorder().push_snapshot(line);
    }

    /// Events pushed out of the window.
    pub fn rotated(&self) -> u64 {
        self.recorder().rotated
    }

    /// What a dump holds, copied quickly; lines are rendered by [`Window::dump`] later.
    pub fn snapshot(&self) -> Snapshot {
        let rec = self.recorder();
        Snapshot {
            window: rec.window(),
            events: rec.len(),
            rotated: rec.rotated,
            contents: rec.window_copy(),
        }
    }
}
