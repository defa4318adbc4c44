//! `observer run`: wires probes -> reader -> decode -> outputs, and shuts down cleanly on
//! SIGINT/SIGTERM (final drain, final stats line, programs detached).

use std::{
    io::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use bytes::Bytes;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
};

use crate::{
    config::Config,
    decode,
    output::{Clock, json},
    preflight,
    probes::{ProbeOptions, Probes},
    reader::{self, ReaderStats},
    stats::KernelCounters,
};

pub fn run(config: Config) -> anyhow::Result<()> {
    preflight::check_privileges()?;
    let f = &config.file;
    let opts = ProbeOptions {
        mode: config.mode,
        btf_path: f.system.btf_path.clone(),
        mount_tracefs: f.system.mount_tracefs,
        ring_buffer_bytes: f.probes.ring_buffer_bytes,
        runtime: config.runtime,
        filters: config.filters.clone(),
        features: if config.file.heartbeats.files.is_empty() {
            0
        } else {
            observer_common::config::FEATURE_HEARTBEAT_WRITES
        },
    };
    let mut probes = Probes::load(&opts)?;
    let maps = probes.take_maps()?;
    let summary = probes.summary();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (mut counters, ring) = KernelCounters::new(maps);
    counters.refresh_heartbeat_files(&config.file.heartbeats.files);
    let result = runtime.block_on(async {
        // Signal handlers exist before anyone is told we started, so an early SIGTERM is a
        // clean stop rather than the default (abrupt) action.
        let signals = Signals::new()?;
        eprintln!("{summary}");
        tracing::info!(mode = probes.mode, "observer started");
        serve(config, ring, counters, signals).await
    });
    drop(probes); // detaches every program
    eprintln!("fsobserver: stopped, programs detached");
    result
}

struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
        })
    }
}

async fn serve(
    config: Config,
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    mut counters: KernelCounters,
    mut signals: Signals,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<Bytes>(config.file.pipeline.queue_capacity);
    let (stop_tx, stop_rx) = watch::channel(false);
    let reader_stats = Arc::new(ReaderStats::default());
    let decode_errors = Arc::new(AtomicU64::new(0));

    let reader = tokio::spawn(reader::run(ring, tx, reader_stats.clone(), stop_rx.clone()));
    let consumer = tokio::spawn(consume(rx, decode_errors.clone()));

    let interval = config.file.pipeline.stats_interval_secs;
    let mut ticker = tokio::time::interval(Duration::from_secs(if interval == 0 {
        10
    } else {
        interval
    }));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = signals.int.recv() => break,
            _ = signals.term.recv() => break,
                        _ = ticker.tick() => {
                counters.refresh_heartbeat_files(&config.file.heartbeats.files);
                if interval == 0 {
                    continue;
                }
                let s = counters.snapshot(&reader_stats, decode_errors.load(Ordering::Relaxed));
                write_line(&json::stats_line(&s));
            }
        }
    }
    let _ = stop_tx.send(true);
    reader
        .await
        .context("reader task")?
        .context("ring reader")?;
    consumer.await.context("consumer task")?;
    let s = counters.snapshot(&reader_stats, decode_errors.load(Ordering::Relaxed));
    write_line(&json::stats_line(&s));
    Ok(())
}

/// Decodes and prints records until the reader closes the queue.
async fn consume(mut rx: mpsc::Receiver<Bytes>, decode_errors: Arc<AtomicU64>) {
    let clock = Clock::new();
    let mut mounts = crate::mounts::MountTable::load();
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        let mut out = String::new();
        for raw in batch.drain(..) {
            match decode::decode(&raw) {
                Ok(mut ev) => {
                    decode::Event::absolutize(&mut ev, &mut mounts);
                    out.push_str(&json::event_line(&ev, &clock));
                    out.push('\n');
                }
                Err(e) => {
                    if decode_errors.fetch_add(1, Ordering::Relaxed) < 10 {
                        tracing::warn!(error = %e, "undecodable record");
                    }
                }
            }
        }
        write_raw(&out);
    }
}

fn write_line(line: &str) {
    write_raw(&format!("{line}\n"));
}

/// Writes to stdout; a broken pipe or full disk under a redirect is logged, never fatal.
fn write_raw(s: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        static WARNED: AtomicU64 = AtomicU64::new(0);
        if WARNED.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(error = %e, "cannot write to stdout; events are being lost");
        }
    }
}
