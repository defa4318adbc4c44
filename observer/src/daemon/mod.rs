//! `observer run`: builds each stage, wires them — kernel (probes, ring reader) -> pipeline
//! (events, analyze, record, stdout) -> serve (HTTP) and act (purge) — and shuts down cleanly
//! on SIGINT/SIGTERM (final drain, final stats line, programs detached).

mod burst;
mod doors;
mod pipeline;
mod ticks;

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use bytes::Bytes;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
};

use crate::{
    act::purge::{self, Purger},
    analyze::{Analysis, capacity::Capacity},
    config::Config,
    events::{Identify, kind::EventKind},
    kernel::{ProbeOptions, Probes, counters::KernelCounters, preflight, reader},
    node::{NodeInfo, clock::Clock},
    record::{Record, published::Published, recorder::RecorderLimits},
    serve::{Api, stdout::Stdout},
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
    counters.refresh_heartbeat_files(&heartbeat_files(f));
    crate::node::mounts::set_node_process(f.node_process());
    // Fail closed: without the node's view, container paths would be taken for node paths.
    let node_proc = crate::node::mounts::node_proc();
    if crate::node::mounts::MountTable::node().is_empty() {
        anyhow::bail!("cannot read the node's mount table at {node_proc}/mountinfo");
    }
    if f.system.node_root != std::path::Path::new("/")
        && crate::events::views::node_namespace().is_none()
    {
        anyhow::bail!(
            "system.node_root is {}, but the node's mount namespace cannot be read at \
             {node_proc}/ns/mnt: run with the node's pid namespace (hostPID) and CAP_SYS_PTRACE, \
             or name a node process in system.node_pid",
            f.system.node_root.display()
        );
    }
    if f.system.node_root != std::path::Path::new("/") {
        check_node_paths_reachable(f)?;
    }
    let identify = Identify::new(
        f.aggregate.max_processes,
        f.here(&f.aggregate.pods_log_dir),
        config.filters.devs.clone(),
    );
    let api = Arc::new(Api {
        info: NodeInfo::new(probes.mode),
        clock: Clock::new(),
        analysis: Mutex::new(Analysis::new(f)),
        capacity: Mutex::new(Capacity::new(
            &f.capacity_mounts()
                .into_iter()
                .map(|m| (f.here(&m), m))
                .collect::<Vec<_>>(),
            std::time::Duration::from_secs(f.capacity.window_secs.max(1)),
        )),
        record: Record::new(
            RecorderLimits {
                max_events: f.recorder.max_events,
                max_bytes: f.recorder.max_bytes,
                max_snapshots: f.recorder.snapshot_secs.max(1),
            },
            f.http.stream_buffer,
        ),
        kernel: Mutex::new(counters),
        reader: Arc::default(),
        events: identify.counters.clone(),
        stdout: Stdout::default(),
        purge: std::sync::OnceLock::new(),
        sinks: Vec::new(),
        streams: Arc::new(tokio::sync::Semaphore::new(f.http.max_streams)),
        dumps: Arc::new(tokio::sync::Semaphore::new(crate::serve::DUMPS_AT_ONCE)),
        doors: Default::default(),
        config,
    });
    ticks::spawn_capacity_sampler(
        Arc::downgrade(&api),
        std::time::Duration::from_millis(api.config.file.capacity.sample_interval_ms),
    )
    .context("cannot start the capacity thread")?;
    ticks::spawn_unmount_watcher(Arc::downgrade(&api))
        .context("cannot start the unmount watcher thread")?;
    if api.config.file.growth.enabled {
        ticks::spawn_growth_reader(
            Arc::downgrade(&api),
            std::time::Duration::from_millis(api.config.file.growth.interval_ms),
            api.config
                .file
                .here(&api.config.file.aggregate.pods_log_dir),
        )
        .context("cannot start the growth thread")?;
        let every = api.config.file.growth.bytes_interval_secs;
        if every > 0 {
            ticks::spawn_growth_sizer(Arc::downgrade(&api), std::time::Duration::from_secs(every))
                .context("cannot start the growth sizing thread")?;
        }
    }
    let every = api.config.file.capacity.deleted_open_secs;
    if every > 0 {
        ticks::spawn_deleted_open_scanner(
            Arc::downgrade(&api),
            std::time::Duration::from_secs(every),
        )
        .context("cannot start the deleted-open thread")?;
    }
    start_purge(&api);
    let result = runtime.block_on(async {
        // Signal handlers exist before anyone is told we started, so an early SIGTERM is a
        // clean stop rather than the default (abrupt) action.
        let signals = Signals::new()?;
        let listeners = doors::bind(&api).await?;
        eprintln!("{summary}");
        if let (Some(tx), Some(l)) = (ready, &listeners.api) {
            let _: Result<(), _> = tx.send(l.local_addr()?);
        }
        tracing::info!(mode = probes.mode, "observer started");
        serve(api, identify, ring, listeners, signals).await
    });
    let detaching = std::time::Instant::now();
    drop(probes); // detaches every program
    eprintln!(
        "fsobserver: stopped, programs detached in {} ms",
        detaching.elapsed().as_millis()
    );
    result
}

/// Starts the purge threads, or records why purge is off. A refused purge section is logged
/// as an error and observation goes on.
fn start_purge(api: &Arc<Api>) {
    let purger = match purge::check(&api.config.file.purge_here()) {
        Ok(None) => Purger::off("purge.enabled is false"),
        Err(e) => {
            tracing::error!("{e}; purge is disabled, observation continues");
            eprintln!("fsobserver: {e}; purge is disabled, observation continues");
            Purger::off(e.to_string())
        }
        Ok(Some(checked)) => {
            let weak = Arc::downgrade(api);
            let audit: purge::workers::Audit = Arc::new(move |item| {
                if let Some(api) = weak.upgrade() {
                    publish_purge(&api, item);
                }
            });
            let weak = Arc::downgrade(api);
            // Lock paths are the node's; purge opens them under system.node_root.
            let live: purge::workers::LiveLocks = Arc::new(move || {
                weak.upgrade()
                    .map(|api| {
                        let f = &api.config.file;
                        let paths = api.analysis().live_lock_paths();
                        paths
                            .iter()
                            .map(|p| f.here(p.as_ref()).display().to_string())
                            .collect()
                    })
                    .unwrap_or_default()
            });
            let names: Vec<_> = checked
                .policies
                .iter()
                .map(|p| p.cfg.name.clone())
                .collect();
            match Purger::start(checked, audit, live) {
                Ok(p) => {
                    eprintln!("fsobserver: purge enabled: policies {}", names.join(", "));
                    let watch: std::sync::Weak<dyn purge::trigger::Watch> =
                        Arc::downgrade(&(api.clone() as Arc<dyn purge::trigger::Watch>));
                    if let Err(e) = purge::trigger::spawn(watch) {
                        tracing::error!("purge triggers not started: {e}");
                    }
                    p
                }
                Err(e) => Purger::off(format!("purge threads not started: {e}")),
            }
        }
    };
    let _: Result<(), _> = api.purge.set(purger);
}

/// One purge decision, published like any event: recorder (so dumps hold the purge report),
/// `/events`, stdout.
fn publish_purge(api: &Api, item: &purge::PurgeItem) {
    let line = serde_json::to_string(item).unwrap_or_default();
    api.publish(&[Arc::new(Published::ready(
        item.time_unix_ns,
        EventKind::Purge,
        (0, 0),
        String::new(),
        item.path.clone(),
        Bytes::from(line),
    ))]);
}

/// Every watched and sampled mount must be the node's own file under `system.node_root` (the
/// same inode seen through the node's root), else the observer would watch its container's
/// filesystem under the node's name. Unknown (a hung filesystem, no access to the node's root)
/// is let through: sampling reports it.
fn check_node_paths_reachable(f: &crate::config::FileConfig) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let node_proc = crate::node::mounts::node_proc();
    let watched = f
        .filters
        .watch_mounts
        .iter()
        .map(|m| ("filters.watch_mounts", m.clone()));
    let sampled = f
        .capacity_mounts()
        .into_iter()
        .map(|m| ("capacity.mounts", m));
    for (key, m) in watched.chain(sampled) {
        let on_node = format!("{node_proc}/root{}", m.display());
        let same = crate::node::fsio::metadata(std::path::Path::new(&on_node))
            .ok()
            .zip(crate::node::fsio::metadata(&f.here(&m)).ok())
            .map(|(a, b)| (a.dev(), a.ino()) == (b.dev(), b.ino()));
        if same == Some(false) {
            anyhow::bail!(
                "{key}: {} is not mounted under system.node_root ({}) here: it would be this \
                 container's own filesystem, not the node's — mount it (or a directory above it)",
                m.display(),
                f.here(&m).display()
            );
        }
    }
    Ok(())
}

/// The configured heartbeat files where the observer opens them.
pub fn heartbeat_files(f: &crate::config::FileConfig) -> Vec<std::path::PathBuf> {
    f.heartbeats.files.iter().map(|p| f.here(p)).collect()
}

/// Load-time kernel features the configuration needs (off ones cost nothing in the kernel).
fn features(config: &Config) -> u32 {
    use observer_common::config::{
        FEATURE_CREATES, FEATURE_GROWTH, FEATURE_HEARTBEAT_WRITES, FEATURE_LOCK_ACQUIRE,
    };
    let f = &config.file;
    let mut bits = 0;
    if !f.heartbeats.files.is_empty() {
        bits |= FEATURE_HEARTBEAT_WRITES;
    }
    if f.probes.create_sample != 0 {
        bits |= FEATURE_CREATES;
    }
    if f.locks.enabled && f.locks.conventions {
        bits |= FEATURE_LOCK_ACQUIRE;
    }
    if f.growth.enabled {
        bits |= FEATURE_GROWTH;
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
    api: Arc<Api>,
    identify: Identify,
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    listeners: doors::Listeners,
    mut signals: Signals,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<Bytes>(api.config.file.pipeline.queue_capacity);
    let (stop_tx, stop_rx) = watch::channel(false);

    let reader = tokio::spawn(reader::run(ring, tx, api.reader.clone(), stop_rx.clone()));
    let consumer = tokio::spawn(pipeline::consume(api.clone(), identify, rx));
    let ticks = tokio::spawn(ticks::run(api.clone(), stop_rx.clone()));
    let unix_file = listeners.unix_file;
    let servers = doors::spawn(listeners, &api, &stop_rx)?;

    tokio::select! {
        _ = signals.int.recv() => {}
        _ = signals.term.recv() => {}
    }
    let _: Result<(), _> = stop_tx.send(true);
    reader
        .await
        .context("reader task")?
        .context("ring reader")?;
    consumer.await.context("consumer task")?;
    let _: Result<(), _> = ticks.await;
    for s in servers {
        let _: Result<Result<(), _>, _> =
            tokio::time::timeout(std::time::Duration::from_secs(2), s).await;
    }
    // Our socket file only: another observer may have replaced it since (ours was stale).
    let sock = &api.config.file.http.unix_socket;
    if unix_file.is_some() && doors::file_id(sock) == unix_file {
        let _: Result<(), _> = std::fs::remove_file(sock);
    }
    // The final stats line is written even with stdout events off: it is the run's summary.
    api.stdout
        .write(format!("{}\n", api.stats().line()).as_bytes());
    Ok(())
}
