//! `observer run`: wires probes -> reader -> pipeline (decode, aggregate, record, publish) ->
//! outputs (stdout, HTTP API), and shuts down cleanly on SIGINT/SIGTERM (final drain, final
//! stats line, programs detached).

pub mod hub;
pub mod pipeline;

use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
};

use crate::{
    config::Config,
    daemon::hub::{Hub, NodeInfo},
    events::line as json,
    kernel::counters::KernelCounters,
    kernel::preflight,
    kernel::reader::{self, ReaderStats},
    kernel::{ProbeOptions, Probes},
    serve::http,
};

/// Runs the daemon until SIGINT/SIGTERM. `ready` receives the HTTP API address once the
/// programs are attached (`observer tail --standalone` runs the daemon in-process this way).
pub fn run(
    config: Config,
    ready: Option<std::sync::mpsc::Sender<std::net::SocketAddr>>,
) -> anyhow::Result<()> {
    preflight::check_privileges()?;
    let f = &config.file;
    let opts = ProbeOptions {
        mode: config.mode,
        btf_path: f.system.btf_path.clone(),
        mount_tracefs: f.system.mount_tracefs,
        ring_buffer_bytes: f.probes.ring_buffer_bytes,
        runtime: config.runtime,
        filters: config.filters.clone(),
        features: features(&config),
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
    let reader_stats = Arc::new(ReaderStats::default());
    let hub = Arc::new(Hub::new(
        config,
        NodeInfo::new(probes.mode),
        counters,
        reader_stats,
    ));
    start_purge(&hub);
    let result = runtime.block_on(async {
        // Signal handlers exist before anyone is told we started, so an early SIGTERM is a
        // clean stop rather than the default (abrupt) action.
        let signals = Signals::new()?;
        let listener = http::bind(&hub.config.file.http.listen).await?;
        if let Some(l) = &listener {
            eprintln!("fsobserver: http listening on {}", l.local_addr()?);
        }
        let unix = http::bind_unix(&hub.config.file.http.unix_socket)?;
        if unix.is_some() {
            eprintln!(
                "fsobserver: http listening on unix:{}",
                hub.config.file.http.unix_socket.display()
            );
        }
        eprintln!("{summary}");
        if let (Some(tx), Some(l)) = (ready, &listener) {
            let _: Result<_, _> = tx.send(l.local_addr()?);
        }
        tracing::info!(mode = probes.mode, "observer started");
        serve(hub, ring, (listener, unix), signals).await
    });
    drop(probes); // detaches every program
    eprintln!("fsobserver: stopped, programs detached");
    result
}

/// Starts the purge threads, or records why purge is off. A refused purge section is logged
/// as an error and observation goes on.
fn start_purge(hub: &Arc<Hub>) {
    let purger = match hub.config.file.purge.check() {
        Ok(None) => crate::act::purge::Purger::off("purge.enabled is false"),
        Err(e) => {
            tracing::error!("{e}; purge is disabled, observation continues");
            eprintln!("fsobserver: {e}; purge is disabled, observation continues");
            crate::act::purge::Purger::off(e.to_string())
        }
        Ok(Some(purge)) => {
            let weak = Arc::downgrade(hub);
            let audit: crate::act::purge::workers::Audit = Arc::new(move |item| {
                if let Some(hub) = weak.upgrade() {
                    pipeline::publish_purge(&hub, item);
                }
            });
            let weak = Arc::downgrade(hub);
            let live: crate::act::purge::workers::LiveLocks = Arc::new(move || {
                weak.upgrade()
                    .map(|hub| pipeline::live_lock_paths(&hub))
                    .unwrap_or_default()
            });
            let names: Vec<_> = purge.policies.iter().map(|p| p.cfg.name.clone()).collect();
            match crate::act::purge::Purger::start(purge, audit, live) {
                Ok(p) => {
                    eprintln!("fsobserver: purge enabled: policies {}", names.join(", "));
                    if let Err(e) = crate::act::purge::trigger::spawn(Arc::downgrade(hub)) {
                        tracing::error!("purge triggers not started: {e}");
                    }
                    p
                }
                Err(e) => crate::act::purge::Purger::off(format!("purge threads not started: {e}")),
            }
        }
    };
    let _: Result<_, _> = hub.purge.set(purger);
}

/// Load-time kernel features the configuration needs (off ones cost nothing in the kernel).
fn features(config: &Config) -> u32 {
    use observer_common::config::{FEATURE_CREATES, FEATURE_HEARTBEAT_WRITES};
    let f = &config.file;
    let mut bits = 0;
    if !f.heartbeats.files.is_empty() {
        bits |= FEATURE_HEARTBEAT_WRITES;
    }
    if f.probes.create_sample != 0 {
        bits |= FEATURE_CREATES;
    }
    bits
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
    hub: Arc<Hub>,
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    (listener, unix): (
        Option<tokio::net::TcpListener>,
        Option<tokio::net::UnixListener>,
    ),
    mut signals: Signals,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<Bytes>(hub.config.file.pipeline.queue_capacity);
    let (stop_tx, stop_rx) = watch::channel(false);

    let reader = tokio::spawn(reader::run(ring, tx, hub.reader.clone(), stop_rx.clone()));
    let consumer = tokio::spawn(pipeline::consume(hub.clone(), rx));
    let ticks = tokio::spawn(pipeline::ticks(hub.clone(), stop_rx.clone()));
    let server = listener.map(|l| tokio::spawn(http::serve(l, hub.clone(), stop_rx.clone())));
    let unix_server = unix.map(|l| tokio::spawn(http::serve(l, hub.clone(), stop_rx.clone())));

    tokio::select! {
        _ = signals.int.recv() => {}
        _ = signals.term.recv() => {}
    }
    let _: Result<_, _> = stop_tx.send(true);
    reader
        .await
        .context("reader task")?
        .context("ring reader")?;
    consumer.await.context("consumer task")?;
    let _: Result<_, _> = ticks.await;
    for s in [server, unix_server].into_iter().flatten() {
        let _: Result<_, _> = tokio::time::timeout(std::time::Duration::from_secs(2), s).await;
    }
    let sock = &hub.config.file.http.unix_socket;
    if !sock.as_os_str().is_empty() {
        let _: Result<_, _> = std::fs::remove_file(sock);
    }
    // The final stats line is written even with stdout events off: it is the run's summary.
    pipeline::write_stdout(
        &hub,
        format!("{}\n", json::stats_line(&hub.stats())).as_bytes(),
    );
    Ok(())
}
