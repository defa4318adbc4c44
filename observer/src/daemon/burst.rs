//! Burst dumps: the first burst of ENOSPC/EDQUOT failures within one second writes the flight
//! recorder's window before it to the dump directory (then not again for a cooldown).

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use crate::serve::Api;

/// ENOSPC/EDQUOT per-second counting for burst dumps.
#[derive(Default)]
pub struct Burst {
    second: u64,
    count: u64,
    last_dump: Option<Instant>,
}

impl Burst {
    /// Counts one failure at `unix_ns`; true when it completes a burst that may dump now.
    pub fn hit(&mut self, unix_ns: u64, threshold: u64, cooldown: Duration) -> bool {
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

/// Filesystems whose failures may make a burst dump: the watched ones (`filters.watch_mounts`)
/// and those sampled for capacity; empty = every filesystem (none configured).
pub fn watched_devs(config: &crate::config::Config) -> Vec<u32> {
    let mut devs = config.filters.devs.clone();
    let mut table = None;
    for m in config.file.capacity_mounts() {
        use std::os::unix::fs::MetadataExt as _;
        let dev = match crate::node::fsio::metadata(&config.file.here(&m)) {
            Ok(meta) => Some(crate::node::kernel_dev(meta.dev())),
            Err(_) => table
                .get_or_insert_with(crate::node::mounts::MountTable::node)
                .dev_of(&m.to_string_lossy()),
        };
        devs.extend(dev);
    }
    devs.sort_unstable();
    devs.dedup();
    devs
}

/// Writes the pre-trigger window to the dump directory, off the async threads. A failure (its
/// own ENOSPC included) is counted and logged once; the daemon carries on.
pub fn spawn_dump(api: Arc<Api>, trigger: serde_json::Value) {
    tokio::task::spawn_blocking(move || {
        let dir = &api.config.file.recorder.dump_dir;
        let counters = &api.record.counters;
        let same_fs = trigger["mount"].as_str().is_some_and(|m| {
            use crate::node::fsio::metadata;
            use std::os::unix::fs::MetadataExt as _;
            match (metadata(std::path::Path::new(m)), metadata(dir)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev(),
                _ => false,
            }
        });
        if same_fs {
            counters.dumps_skipped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(dir = %dir.display(), "burst dump skipped: the dump directory is on the failing filesystem");
            return;
        }
        let (header, window) = api.dump("burst", Some(trigger));
        let stamp = humantime::format_rfc3339_millis(std::time::SystemTime::now())
            .to_string()
            .replace(':', "-");
        let rec = &api.config.file.recorder;
        match crate::record::recorder::write_dump(dir, &stamp, |w| window.write_to(&header, w)) {
            Ok(path) => {
                counters.dumps_written.fetch_add(1, Ordering::Relaxed);
                let removed = crate::record::recorder::retain_dumps(
                    dir,
                    rec.dump_max_files,
                    rec.dump_max_bytes,
                );
                counters
                    .dumps_removed
                    .fetch_add(removed as u64, Ordering::Relaxed);
                tracing::warn!(path = %path.display(), removed_old = removed, "ENOSPC/EDQUOT burst: flight recorder dumped");
            }
            Err(e) => {
                if counters.dumps_failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::error!(dir = %dir.display(), error = %e, "cannot write a burst dump (counted in fsobserver_dumps_total{{result=\"failed\"}}; further failures are not logged)");
                }
            }
        }
    });
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
