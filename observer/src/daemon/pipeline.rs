//! The consumer: decoded events are identified (process, container, pod), aggregated,
//! recorded, published to `/events` clients and written to stdout; an ENOSPC/EDQUOT burst
//! triggers a dump of the window before it. Also the periodic ticks (stats, snapshots,
//! capacity samples).

use std::{
    io::Write as _,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::{
    analyze::locks::{LockEvent, Touch, holder_alive},
    daemon::hub::{Hub, State},
    events::decode::{self, Event, SyscallRecord},
    events::identify::ProcIdentity,
    events::line as json,
    record::published::Published,
};

const ENOSPC: u32 = 28;
const EDQUOT: u32 = 122;

/// ENOSPC/EDQUOT per-second counting for burst dumps.
#[derive(Default)]
struct Burst {
    second: u64,
    count: u64,
    last_dump: Option<Instant>,
}

impl Burst {
    /// Counts one failure at `unix_ns`; true when it completes a burst that may dump now.
    fn hit(&mut self, unix_ns: u64, threshold: u64, cooldown: Duration) -> bool {
        let s = unix_ns / 1_000_000_000;
        if s != self.second {
            self.second = s;
            self.count = 0;
        }
        self.count += 1;
        if self.count != threshold {
            return false;
        }
        if self.last_dump.is_some_and(|t| t.elapsed() < cooldown) {
            return false;
        }
        self.last_dump = Some(Instant::now());
        true
    }
}

/// Decodes and handles records until the reader closes the queue.
pub async fn consume(hub: Arc<Hub>, mut rx: mpsc::Receiver<Bytes>) {
    let f = &hub.config.file;
    let to_stdout = f.output.stdout;
    let (threshold, cooldown) = (
        f.recorder.burst_errors,
        Duration::from_secs(f.recorder.burst_cooldown_secs),
    );
    let dumps = !f.recorder.dump_dir.as_os_str().is_empty();
    let watch_devs = &hub.config.filters.devs;
    let mut burst = Burst::default();
    let mut batch = Vec::with_capacity(256);
    let mut mounts_loaded = Instant::now();
    while rx.recv_many(&mut batch, 256).await > 0 {
        let mut out = Vec::new();
        let mut trigger = None;
        {
            let mut guard = hub.state();
            let st = &mut *guard;
            let now = Instant::now();
            if now.duration_since(mounts_loaded) > Duration::from_secs(2) {
                st.mounts = crate::node::mounts::MountTable::load();
                mounts_loaded = now;
            }
            for raw in batch.drain(..) {
                let mut ev = match decode::decode(&raw) {
                    Ok(ev) => ev,
                    Err(e) => {
                        if hub.own.decode_errors.fetch_add(1, Ordering::Relaxed) < 10 {
                            tracing::warn!(error = %e, "undecodable record");
                        }
                        continue;
                    }
                };
                Event::absolutize(&mut ev, &mut st.mounts);
                let Event::Syscall(r) = &ev;
                let mount = st.mounts.mount_of(&r.path);
                // The kernel passes absolute names (dev 0) through the watched-mount filter:
                // their filesystem is the mount their path lies under.
                if r.dev == 0 && !watch_devs.is_empty() {
                    let dev = mount.and_then(|m| st.mounts.dev_of(m));
                    if !dev.is_some_and(|d| watch_devs.contains(&d)) {
                        hub.own.filtered.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
                let space_error = r.errno == ENOSPC || r.errno == EDQUOT;
                if space_error
                    && let Some(dev) = match r.dev {
                        0 => mount.and_then(|m| st.mounts.dev_of(m)),
                        d => Some(d),
                    }
                {
                    *st.space_errors.entry(dev).or_default() += 1;
                }
                let who = st.agg.identify(r, now);
                st.agg.observe(r, &who, mount);
                let unix_ns = hub.clock.unix_ns(r.ktime_ns);
                if dumps && space_error && burst.hit(unix_ns, threshold, cooldown) {
                    trigger = Some(serde_json::json!({
                        "time_unix_ns": unix_ns,
                        "errno": crate::node::errno::name(r.errno),
                        "path": r.path,
                        "mount": mount,
                        "errors_in_second": threshold,
                    }));
                }
                let lock_events = lock_touch(st, r, &who, unix_ns);
                let Event::Syscall(r) = ev;
                let p = Arc::new(Published::syscall(r, who, unix_ns));
                publish(&hub, st, p.clone());
                if to_stdout {
                    p.write_line(&mut out);
                    out.push(b'\n');
                }
                if !lock_events.is_empty() {
                    publish_locks(&hub, st, lock_events, to_stdout.then_some(&mut out));
                    hub.sync_delete_sample(st);
                }
            }
        }
        if to_stdout {
            write_stdout(&hub, &out);
        }
        if let Some(t) = trigger {
            spawn_burst_dump(hub.clone(), t);
        }
    }
}

/// Feeds a heartbeat, deletion or create of an absolute path to the lock guard.
fn lock_touch(
    st: &mut State,
    r: &SyscallRecord,
    who: &ProcIdentity,
    unix_ns: u64,
) -> Vec<LockEvent> {
    let State { locks, mounts, .. } = st;
    let Some(t) = locks.as_mut() else {
        return Vec::new();
    };
    let kind = r.kind();
    if !matches!(kind, "heartbeat" | "delete" | "create")
        || !r.path.starts_with('/')
        || !r.path_complete()
    {
        return Vec::new(); // failures (the storm case) never touch a lock
    }
    let touch = Touch {
        key: mounts
            .fs_key(&r.path)
            .unwrap_or_else(|| (0, r.path.clone())),
        path: &r.path,
        time_unix_ns: unix_ns,
        who,
        errno: r.errno,
        syscall: r.syscall_name(),
    };
    match kind {
        "heartbeat" => t.heartbeat(&touch),
        "delete" => t.removed(&touch, holder_alive),
        "create" => t.created(&touch),
        _ => Vec::new(),
    }
}

/// Publishes lock-guard events like syscall events: recorder, `/events`, stdout (`out`).
pub fn publish_locks(
    hub: &Hub,
    st: &mut State,
    events: Vec<LockEvent>,
    mut out: Option<&mut Vec<u8>>,
) {
    for ev in events {
        let line = serde_json::to_string(&ev).unwrap_or_default();
        if ev.severity != "info" {
            tracing::warn!(event = ev.event, path = %ev.lock.path, "lock guard");
        }
        if let Some(o) = out.as_deref_mut() {
            o.extend_from_slice(line.as_bytes());
            o.push(b'\n');
        }
        let holder = ev.lock.holder.as_ref();
        let p = Arc::new(Published::ready(
            ev.time_unix_ns,
            "lock",
            (
                ev.lock.last_failure.as_ref().map_or(0, |f| f.errno),
                holder.map_or(0, |h| h.pid),
            ),
            holder.map(|h| h.comm.clone()).unwrap_or_default(),
            ev.lock.path.clone(),
            Bytes::from(line),
        ));
        publish(hub, st, p);
    }
}

/// Into the flight recorder, and to the `/events` clients when there are any. Called with the
/// state locked: a client subscribing under the same lock gets each event exactly once.
pub fn publish(hub: &Hub, st: &mut State, p: Arc<Published>) {
    let clients = hub.events.receiver_count() > 0;
    if clients {
        // Rendered once for every client (and counted in the recorder's bytes).
        p.line();
    }
    st.recorder.push(p.clone());
    if clients {
        let _: Result<_, _> = hub.events.send(p);
    }
}

/// Re-checks lock holders; publishes `holder-dead` transitions.
pub fn check_lock_holders(hub: &Hub) {
    let mut st = hub.state();
    let Some(t) = st.locks.as_mut() else {
        return;
    };
    let events = t.check_holders(crate::daemon::hub::now_unix_ns(), holder_alive);
    if events.is_empty() {
        return;
    }
    hub.sync_delete_sample(&mut st);
    let mut out = Vec::new();
    let to_stdout = hub.config.file.output.stdout;
    publish_locks(hub, &mut st, events, to_stdout.then_some(&mut out));
    drop(st);
    write_stdout(hub, &out);
}

/// Writes the pre-trigger window to the dump directory, off the async threads. A failure (its
/// own ENOSPC included) is counted and logged once; the daemon carries on.
fn spawn_burst_dump(hub: Arc<Hub>, trigger: serde_json::Value) {
    tokio::task::spawn_blocking(move || {
        let dir = &hub.config.file.recorder.dump_dir;
        let same_fs = trigger["mount"].as_str().is_some_and(|m| {
            use std::os::unix::fs::MetadataExt as _;
            match (std::fs::metadata(m), std::fs::metadata(dir)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev(),
                _ => false,
            }
        });
        if same_fs {
            hub.own.dumps_skipped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(dir = %dir.display(), "burst dump skipped: the dump directory is on the failing filesystem");
            return;
        }
        let data = hub.dump("burst", Some(trigger));
        let stamp = humantime::format_rfc3339_millis(std::time::SystemTime::now())
            .to_string()
            .replace(':', "-");
        match crate::record::recorder::write_dump(dir, &stamp, &data) {
            Ok(path) => {
                hub.own.dumps_written.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %path.display(), bytes = data.len(), "ENOSPC/EDQUOT burst: flight recorder dumped");
            }
            Err(e) => {
                if hub.own.dumps_failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::error!(dir = %dir.display(), error = %e, "cannot write a burst dump (counted in fsobserver_dumps_total{{result=\"failed\"}}; further failures are not logged)");
                }
            }
        }
    });
}

/// Once a second: a compact aggregate snapshot into the flight recorder; every
/// `stats_interval_secs`: a stats line; heartbeat files re-resolved. Capacity is sampled on its
/// own interval.
pub async fn ticks(hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let f = &hub.config.file;
    let stats_every = f.pipeline.stats_interval_secs;
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let mut cap = tokio::time::interval(Duration::from_millis(f.capacity.sample_interval_ms));
    let mut holders = tokio::time::interval(Duration::from_millis(f.locks.check_interval_ms));
    holders.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    cap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = cap.tick() => hub.capacity().sample(),
            _ = holders.tick() => check_lock_holders(&hub),
            _ = second.tick() => {
                n += 1;
                hub.state().agg.leaks.tick(Instant::now());
                let top = hub.state().agg.top(5);
                let (ring_drops, errors) =
                    hub.kernel.lock().unwrap_or_else(|p| p.into_inner()).light();
                let snap = serde_json::json!({
                    "type": "snapshot",
                    "time": crate::daemon::hub::now_rfc3339(),
                    "events": top.events,
                    "errors": errors,
                    "kernel_ring_drops": ring_drops,
                    "userspace_queue_drops": hub.reader.queue_drops.load(Ordering::Relaxed),
                    "top_paths": top.paths,
                    "capacity": hub.capacity().rows(),
                });
                hub.state().recorder.push_snapshot(Bytes::from(snap.to_string()));
                if n.is_multiple_of(5) {
                    let files = &hub.config.file.heartbeats.files;
                    hub.kernel.lock().unwrap_or_else(|p| p.into_inner()).refresh_heartbeat_files(files);
                }
                if f.output.stdout && stats_every > 0 && n.is_multiple_of(stats_every) {
                    write_stdout(&hub, format!("{}\n", json::stats_line(&hub.stats())).as_bytes());
                }
            }
        }
    }
}

/// Writes to stdout; a broken pipe or full disk under a redirect is counted and logged once,
/// never fatal.
pub fn write_stdout(hub: &Hub, s: &[u8]) {
    if s.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(s).and_then(|()| out.flush())
        && hub.own.stdout_failures.fetch_add(1, Ordering::Relaxed) == 0
    {
        tracing::warn!(error = %e, "cannot write to stdout; events are being lost there");
    }
}

/// Publishes one purge audit item like any event: recorder (so dumps hold the purge report),
/// `/events`, stdout.
pub fn publish_purge(hub: &Hub, item: &crate::act::purge::PurgeItem) {
    let line = serde_json::to_string(item).unwrap_or_default();
    if hub.config.file.output.stdout {
        write_stdout(hub, format!("{line}\n").as_bytes());
    }
    let p = Arc::new(Published::ready(
        item.time_unix_ns,
        "purge",
        (0, 0),
        String::new(),
        item.path.clone(),
        Bytes::from(line),
    ));
    let mut st = hub.state();
    publish(hub, &mut st, p);
}

/// Paths of tracked locks whose holder is alive (purge keeps them).
pub fn live_lock_paths(hub: &Hub) -> Vec<String> {
    let st = hub.state();
    let Some(t) = st.locks.as_ref() else {
        return Vec::new();
    };
    t.locks()
        .filter(|l| {
            matches!(
                l.state,
                crate::analyze::locks::LockState::Healthy
                    | crate::analyze::locks::LockState::HeartbeatFailing
            ) && l.holder.as_ref().is_some_and(holder_alive)
        })
        .map(|l| l.path.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_fires_once_per_cooldown() {
        let mut b = Burst::default();
        let s = 1_000_000_000;
        let hits = (0..10)
            .filter(|i| b.hit(5 * s + i, 3, Duration::from_secs(60)))
            .count();
        assert_eq!(hits, 1, "one dump per burst");
        let later = (0..10)
            .filter(|i| b.hit(6 * s + i, 3, Duration::from_secs(60)))
            .count();
        assert_eq!(later, 0, "cooldown holds");
        let mut b = Burst::default();
        assert!(
            !(0..2).any(|i| b.hit(i, 3, Duration::ZERO)),
            "below the threshold"
        );
        assert!(!b.hit(s, 3, Duration::ZERO), "a new second starts over");
        assert!(!b.hit(s + 1, 3, Duration::ZERO));
        assert!(b.hit(s + 2, 3, Duration::ZERO));
    }
}
