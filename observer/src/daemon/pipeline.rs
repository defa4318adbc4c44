//! The consumer: one batch of raw records at a time, each record through the stages in order —
//! events (decode, absolute path, filesystem, who) -> analyze (aggregate, lock guard) — then the
//! batch to every sink (recorder and `/events`, stdout, plugged-in sinks), plus the burst-dump
//! check.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::burst::{Burst, spawn_dump};
use crate::{
    events::{Identify, Observed},
    node::errno::{EDQUOT, ENOSPC},
    record::published::Published,
    serve::{Api, lock_published},
};

/// Decodes and handles records until the reader closes the queue.
pub async fn consume(api: Arc<Api>, mut identify: Identify, mut rx: mpsc::Receiver<Bytes>) {
    let f = &api.config.file;
    let (threshold, cooldown) = (
        f.recorder.burst_errors,
        Duration::from_secs(f.recorder.burst_cooldown_secs),
    );
    let dumps = !f.recorder.dump_dir.as_os_str().is_empty();
    let dump_devs = super::burst::watched_devs(&api.config);
    let mut burst = Burst::default();
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        let mut published = Vec::with_capacity(batch.len());
        let mut trigger = None;
        let mut locks_changed = false;
        let now = Instant::now();
        identify.refresh(now);
        {
            let mut analysis = api.analysis();
            for raw in batch.drain(..) {
                // events: decode, place, identify
                let Some(r) = identify.decode(&raw, now) else {
                    continue;
                };
                let who = identify.who(&r, now);
                let Some((mount, dev)) = identify.place(&r) else {
                    continue;
                };
                if r.hook == observer_common::event::HOOK_DIR_NAME {
                    // Not an event: the name of a directory the growth counters key.
                    if let Some(path) = r.node_path() {
                        analysis.growth.name(
                            observer_common::config::DirKey {
                                dev: r.dev,
                                _pad0: 0,
                                ino: r.ino,
                            },
                            path.to_string(),
                            mount.map(String::from),
                            crate::analyze::growth::Actor {
                                pid: who.pid,
                                comm: who.comm.clone(),
                                workload: who.workload_label.clone(),
                            },
                        );
                    }
                    continue;
                }
                let unix_ns = api.clock.unix_ns(r.ktime_ns);
                let ev = Observed {
                    record: &r,
                    who: &who,
                    mount,
                    dev,
                    unix_ns,
                };
                // analyze: aggregation, lock guard
                let lock_events = analysis.observe(&ev, || identify.fs_key(&r));
                let space_error = r.errno == ENOSPC || r.errno == EDQUOT;
                // Only failures on a watched filesystem (when some are configured) make a
                // burst: any container can fail writes on /dev/full or its own tmpfs.
                let watched = dump_devs.is_empty() || dev.is_some_and(|d| dump_devs.contains(&d));
                if dumps && space_error && watched && burst.hit(unix_ns, threshold, cooldown) {
                    trigger = Some(serde_json::json!({
                        "time_unix_ns": unix_ns,
                        "errno": crate::node::errno::name(r.errno),
                        "path": r.path,
                        "mount": mount,
                        "errors_in_second": threshold,
                    }));
                }
                // published in order: the event, then what the lock guard made of it
                published.push(Arc::new(Published::syscall(r, who, unix_ns)));
                published.extend(lock_events.iter().map(lock_published));
                locks_changed |= !lock_events.is_empty();
            }
        }
        // record and serve: every sink, in order
        api.publish(&published);
        if locks_changed {
            api.sync_delete_sample();
        }
        if let Some(t) = trigger {
            spawn_dump(api.clone(), t);
        }
    }
}
