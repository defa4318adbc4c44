//! Stage 2 — ring reader: drains the BPF ring buffer when epoll says it is readable and hands
//! raw records to a bounded queue with `try_send`. It never waits on a consumer: a full queue
//! drops the record and counts it.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use aya::maps::{MapData, RingBuf};
use bytes::Bytes;
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::{mpsc, watch},
};

/// Longest a record waits in a quiet ring before the reader drains it.
pub const DRAIN_TICK: std::time::Duration = std::time::Duration::from_millis(20);

/// Userspace-side counters of the transport.
#[derive(Debug, Default)]
pub struct ReaderStats {
    /// Records taken from the ring.
    pub received: AtomicU64,
    /// Records dropped because the queue was full.
    pub queue_drops: AtomicU64,
}

/// Reads until `shutdown` flips to true or the consumer goes away; a final drain runs at
/// shutdown so records already in the ring are not lost.
pub async fn run(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<Bytes>,
    stats: Arc<ReaderStats>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // SAFETY: the ring's map fd is owned by `ring`, which the AsyncFd owns until it is dropped.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    // The kernel skips wakeups while the ring holds less than a batch: drain on a tick as well.
    let mut tick = tokio::time::interval(DRAIN_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if !drain(fd.get_mut(), &tx, &stats) {
                    return Ok(());
                }
            }
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                if !drain(guard.get_inner_mut(), &tx, &stats) {
                    return Ok(());
                }
                guard.clear_ready();
            }
            _ = shutdown.wait_for(|stop| *stop) => {
                drain(fd.get_mut(), &tx, &stats);
                return Ok(());
            }
        }
    }
}

/// Moves every available record into the queue. Returns false when the consumer is gone.
fn drain(ring: &mut RingBuf<MapData>, tx: &mpsc::Sender<Bytes>, stats: &ReaderStats) -> bool {
    while let Some(item) = ring.next() {
        stats.received.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(Bytes::copy_from_slice(&item)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                stats.queue_drops.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
        }
    }
    true
}
