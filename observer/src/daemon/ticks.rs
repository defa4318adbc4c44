//! The periodic work: a compact aggregate snapshot into the flight recorder every second, a
//! stats line every `stats_interval_secs`, the kernel's clock offset and heartbeat files
//! refreshed, lock holders re-checked; and, on threads of their own, capacity sampled (statvfs
//! can hang) and the counts of unmounted filesystems forgotten.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::watch;

use crate::serve::Api;

pub async fn run(api: Arc<Api>, mut stop: watch::Receiver<bool>) {
    let f = &api.config.file;
    let stats_every = f.pipeline.stats_interval_secs;
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let mut holders = tokio::time::interval(Duration::from_millis(f.locks.check_interval_ms));
    for t in [&mut second, &mut holders] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = holders.tick() => api.check_lock_holders(),
            _ = second.tick() => {
                n += 1;
                snapshot(&api);
                api.kernel().refresh_clock();
                if n.is_multiple_of(5) {
                    api.kernel()
                        .refresh_heartbeat_files(&super::heartbeat_files(&api.config.file));
                }
                if f.output.stdout && stats_every > 0 && n.is_multiple_of(stats_every) {
                    api.stdout.write(format!("{}\n", api.stats().line()).as_bytes());
                }
            }
        }
    }
}

/// How often the node's real filesystems are looked for again when they are found rather than
/// listed (pod volumes come and go).
const FIND_FILESYSTEMS_EVERY: Duration = Duration::from_secs(10);

/// Samples capacity every `capacity.sample_interval_ms` until the daemon is gone, each call
/// with a deadline and without the table's lock (a hung filesystem is reported as such). With
/// no filesystem listed (`capacity.mounts`, `filters.watch_mounts`), every real filesystem of
/// the node is sampled, at most `capacity.max_mounts`.
pub fn spawn_capacity_sampler(api: std::sync::Weak<Api>, every: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("capacity".into())
        .spawn(move || {
            let mut found_at: Option<Instant> = None;
            loop {
                if let Some(api) = api.upgrade()
                    && api.config.file.capacity_found()
                    && found_at.is_none_or(|t| t.elapsed() >= FIND_FILESYSTEMS_EVERY)
                {
                    found_at = Some(Instant::now());
                    let f = &api.config.file;
                    let mounts: Vec<_> =
                        crate::node::mounts::node_real_filesystems(f.capacity.max_mounts)
                            .into_iter()
                            .map(|m| (f.here(std::path::Path::new(&m)), m.into()))
                            .filter(|(here, node): &(std::path::PathBuf, std::path::PathBuf)| {
                                here == node || crate::node::mounts::reaches_node_path(here, node)
                            })
                            .collect();
                    api.capacity().set_found(&mounts);
                }
                let Some(mounts) = api.upgrade().map(|a| a.capacity().mounts()) else {
                    return;
                };
                if !mounts.is_empty() {
                    let sampled = mounts
                        .iter()
                        .map(|(m, known)| crate::analyze::capacity::sample(m, *known))
                        .collect();
                    let Some(api) = api.upgrade() else { return };
                    api.capacity().record(sampled);
                }
                std::thread::sleep(every);
            }
        })
        .map(drop)
}

/// Counts the space of deleted-but-open files every `every` until the daemon is gone (a pass
/// over `/proc/*/fd`, on a thread of its own: it reads every process's descriptors).
pub fn spawn_deleted_open_scanner(
    api: std::sync::Weak<Api>,
    every: Duration,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("deleted-open".into())
        .spawn(move || {
            loop {
                let mounts = crate::node::mounts::MountTable::node();
                let pass =
                    crate::node::deleted::scan(|dev| mounts.mount_point(dev).map(String::from));
                let Some(api) = api.upgrade() else { return };
                api.capacity().deleted_open = pass;
                drop(api);
                std::thread::sleep(every);
            }
        })
        .map(drop)
}

/// Reads the kernel's exact entry counts into the growth table every `every` until the daemon
/// is gone (map reads are syscalls, one per key: on a thread of its own). Processes new to the
/// table are identified here while they still run (comm, container, pod).
pub fn spawn_growth_reader(
    api: std::sync::Weak<Api>,
    every: Duration,
    pods_dir: std::path::PathBuf,
) -> std::io::Result<()> {
    /// Processes identified per read at most (the rest on the next read).
    const IDENTIFY_PER_READ: usize = 256;
    std::thread::Builder::new()
        .name("growth".into())
        .spawn(move || {
            let mut procs = crate::events::identify::ProcTable::new(
                crate::analyze::growth::PROCS_MAX,
                pods_dir,
            );
            loop {
                let Some(api) = api.upgrade() else { return };
                // Killed processes that are gone (a pid alive again is someone else's now),
                // read before the counts: a process dead by then made every count it will
                // make, so the counts read next hold all of them (read after, a process killed
                // between the two reads would be listed with the counts of a moment before).
                let killed: std::collections::HashMap<u32, u32> = api
                    .kernel()
                    .killed()
                    .into_iter()
                    .filter(|(pid, _)| !std::path::Path::new(&format!("/proc/{pid}")).exists())
                    .collect();
                let totals = api.kernel().entries();
                let unknown = api.analysis().growth.unknown_procs(totals.by_proc.keys());
                let now = Instant::now();
                let who: std::collections::HashMap<u32, crate::analyze::growth::Actor> = unknown
                    .into_iter()
                    .take(IDENTIFY_PER_READ)
                    .filter_map(|pid| {
                        // What the kernel recorded while it ran (it may be gone by now).
                        let (comm, cgroup) = api.kernel().proc_name(pid)?;
                        let id = procs.get(pid, &comm, cgroup, None, now);
                        Some((
                            pid,
                            crate::analyze::growth::Actor {
                                pid,
                                comm: id.comm.clone(),
                                workload: id.workload_label.clone(),
                            },
                        ))
                    })
                    .collect();
                let now_ns = crate::node::clock::now_unix_ns();
                let mut analysis = api.analysis();
                analysis
                    .growth
                    .tick(&totals.by_dir, &totals.by_proc, &who, now_ns);
                analysis.growth.note_killed(&killed);
                drop(analysis);
                drop(api);
                std::thread::sleep(every);
            }
        })
        .map(drop)
}

/// Forgets the counts of every filesystem unmounted from the node, as soon as the kernel says
/// the mount table changed (a poll on mountinfo; every 10 s at the latest, and the same if the
/// table cannot be watched), until the daemon is gone: the next filesystem given the same
/// anonymous device number starts from zero. For `RETIRED` after, while the number is not
/// mounted again, its keys are dropped again every `RECHECK` (a CPU's pending deletion slot puts
/// its key back when that CPU next counts a deletion elsewhere). Filesystems never seen in the
/// node's table (mounted only inside a container's namespace) are left alone; an unreadable
/// table changes nothing.
pub fn spawn_unmount_watcher(api: std::sync::Weak<Api>) -> std::io::Result<()> {
    use crate::node::{mounted, mounts::MountWatch};
    const AT_LATEST: Duration = Duration::from_secs(10);
    const RECHECK: Duration = Duration::from_secs(2);
    const RETIRED: Duration = Duration::from_secs(20);
    // Short waits, so that the thread sees the daemon go.
    const WAIT: Duration = Duration::from_millis(500);
    std::thread::Builder::new()
        .name("unmounts".into())
        .spawn(move || {
            let watch = MountWatch::node();
            let mut before = mounted::node().unwrap_or_default();
            let mut retired: std::collections::HashMap<u32, Instant> = Default::default();
            let mut read_at = Instant::now();
            loop {
                let changed = watch.wait(WAIT);
                let Some(api) = api.upgrade() else { return };
                let due = if retired.is_empty() {
                    AT_LATEST
                } else {
                    RECHECK
                };
                if !changed && read_at.elapsed() < due {
                    continue;
                }
                read_at = Instant::now();
                let Some(now) = mounted::node() else {
                    continue;
                };
                let gone = mounted::gone(&before, &now);
                for d in &gone {
                    retired.insert(*d, read_at);
                }
                retired.retain(|d, at| !now.contains_key(d) && at.elapsed() < RETIRED);
                let forget: std::collections::HashSet<u32> =
                    gone.iter().chain(retired.keys()).copied().collect();
                let keys = api.kernel().forget_filesystems(&forget);
                if !gone.is_empty() || keys > 0 {
                    let devs: Vec<String> =
                        forget.iter().map(|d| crate::node::dev_string(*d)).collect();
                    tracing::debug!(?devs, keys, "unmounted: their counts forgotten");
                }
                before = now;
            }
        })
        .map(drop)
}

/// Measures the culprit directories' bytes every `every` (a bounded `du` each, with a deadline:
/// a hung filesystem costs one parked thread, not this one) until the daemon is gone.
pub fn spawn_growth_sizer(api: std::sync::Weak<Api>, every: Duration) -> std::io::Result<()> {
    /// One directory's walk may take this long before its filesystem counts as not answering.
    const WALK_TIMEOUT: Duration = Duration::from_secs(30);
    std::thread::Builder::new()
        .name("growth-bytes".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(api) = api.upgrade() else { return };
                let g = &api.config.file.growth;
                let now_ns = crate::node::clock::now_unix_ns();
                let targets = api.analysis().growth.size_targets(
                    g.culprit_share,
                    g.culprit_min_net as i64,
                    now_ns,
                );
                let mut budget = g.bytes_max_entries;
                let mut measured = Vec::new();
                // Filesystems that did not answer this pass: their other directories wait.
                let mut hung: Vec<String> = Vec::new();
                for (mount, dir) in targets {
                    if budget == 0 {
                        break;
                    }
                    if hung.contains(&mount) {
                        continue;
                    }
                    let path = api.config.file.here(std::path::Path::new(&dir));
                    let left = budget;
                    let tree = crate::node::fsio::within(&path, WALK_TIMEOUT, move |p| {
                        crate::node::du::measure(p, left).map_err(std::io::Error::from)
                    });
                    match tree {
                        Ok(tree) => {
                            budget = budget.saturating_sub(tree.entries);
                            measured.push((mount, dir, tree));
                        }
                        Err(e) if e.is_hung() => hung.push(mount),
                        Err(_) => {}
                    }
                }
                let now_ns = crate::node::clock::now_unix_ns();
                api.analysis().growth.note_sizes(measured, now_ns);
            }
        })
        .map(drop)
}

/// The second's compact snapshot into the flight recorder.
fn snapshot(api: &Api) {
    let top = {
        let mut analysis = api.analysis();
        analysis.agg.leaks.tick(Instant::now());
        analysis.agg.top(5)
    };
    let (ring_drops, errors) = api.kernel().light();
    let snap = serde_json::json!({
        "type": "snapshot",
        "time": crate::node::clock::now_rfc3339(),
        "events": top.events,
        "errors": errors,
        "kernel_ring_drops": ring_drops,
        "userspace_queue_drops": api.reader.queue_drops.load(Ordering::Relaxed),
        "top_paths": top.paths,
        "capacity": api.capacity().rows(),
    });
    api.record.push_snapshot(Bytes::from(snap.to_string()));
}
