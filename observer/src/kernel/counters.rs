//! In-kernel counters and transport losses: kernel ring drops per CPU, userspace queue drops,
//! exact per-(syscall, errno) failure counts, deletion counts per process/directory/mount and
//! heartbeat outcomes.

use std::{collections::HashMap, sync::atomic::Ordering};

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use observer_common::config::{
    COUNTER_ERROR_KEYS_FULL, COUNTER_EVENTS, COUNTER_FILTERED, COUNTER_HEARTBEAT_FAILED,
    COUNTER_HEARTBEAT_OK, COUNTER_PATH_INCOMPLETE, COUNTER_REFRESH_COALESCED, COUNTER_RING_DROPS,
    COUNTER_TIMES_SET, DirKey, EntryCounts, ErrorKey,
};
use serde::Serialize;

use crate::kernel::{ProbeMaps, reader::ReaderStats};

/// How many processes/directories the stats line lists (largest first).
const TOP: usize = 20;

/// A snapshot, serialised as the `{"type":"stats",...}` line.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Records the kernel could not reserve in the ring (sum over CPUs).
    pub kernel_ring_drops: u64,
    /// The same, per CPU (index = CPU).
    pub kernel_ring_drops_per_cpu: Vec<u64>,
    /// Records the kernel wrote.
    pub kernel_events: u64,
    pub kernel_path_incomplete: u64,
    pub kernel_error_keys_full: u64,
    /// Calls skipped by the comm/cgroup/device filters.
    pub kernel_filtered: u64,
    pub heartbeats_ok: u64,
    pub heartbeats_failed: u64,
    /// Of `heartbeats_ok`: calls that restored explicit times (tar, `cp -a`), not sent.
    pub heartbeats_times_set: u64,
    /// Of `heartbeats_ok`: refreshes repeating one sent less than 50 ms before, not sent.
    pub heartbeats_coalesced: u64,
    /// Records the reader took from the ring.
    pub userspace_received: u64,
    /// Records dropped because the userspace queue was full.
    pub userspace_queue_drops: u64,
    /// Records that failed to decode.
    pub decode_errors: u64,
    /// Exact failure counts (kernel maps), sorted by syscall then errno.
    pub errors: Vec<ErrorCount>,
    /// Exact deletion counts per filesystem (dev `0:0`: named by absolute path, not resolved).
    pub deletes_by_mount: Vec<DeleteRow>,
    /// Largest deleters (by total) among live keys.
    pub deletes_by_process: Vec<DeleteRow>,
    /// Directories with the most deletions (the directory names were resolved against).
    pub deletes_by_dir: Vec<DeleteRow>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ErrorCount {
    pub syscall: &'static str,
    pub errno: u32,
    pub errno_name: String,
    /// `major:minor` of the filesystem (`0:0`: an absolute name the kernel did not resolve).
    pub dev: String,
    /// Its mount point here, when mounted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    pub count: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DeleteRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    pub files: u64,
    pub dirs: u64,
    pub renames: u64,
    pub renames_over: u64,
    pub failed: u64,
    /// Entries and directories created (`growth.enabled`).
    pub created: u64,
    pub mkdirs: u64,
}

impl DeleteRow {
    fn add(&mut self, c: &EntryCounts) {
        let EntryCounts {
            files,
            dirs,
            renames,
            renames_over,
            failed,
            created,
            mkdirs,
        } = *c;
        self.files += files;
        self.dirs += dirs;
        self.renames += renames;
        self.renames_over += renames_over;
        self.failed += failed;
        self.created += created;
        self.mkdirs += mkdirs;
    }

    fn total(&self) -> u64 {
        self.files + self.dirs + self.renames + self.failed
    }
}

/// Reads the kernel maps; holds them for the daemon's lifetime.
pub struct KernelCounters {
    counters: PerCpuArray<MapData, u64>,
    errors: PerCpuHashMap<MapData, ErrorKey, u64>,
    deletes: crate::kernel::deletes::DeleteMaps,
    heartbeat_files: aya::maps::HashMap<MapData, DirKey, u8>,
    proc_names: aya::maps::HashMap<MapData, u32, observer_common::config::ProcName>,
    killed: aya::maps::HashMap<MapData, u32, u32>,
    config: aya::maps::Array<MapData, observer_common::config::RuntimeConfig>,
    /// The deletion sampling the programs use now (`None`: as loaded).
    delete_sample: Option<u32>,
}

impl KernelCounters {
    pub fn new(maps: ProbeMaps) -> (Self, aya::maps::RingBuf<MapData>) {
        let counters = Self {
            counters: maps.counters,
            errors: maps.errors,
            deletes: crate::kernel::deletes::DeleteMaps {
                by_proc: maps.deletes_by_proc,
                by_dir: maps.deletes_by_dir,
                by_mount: maps.deletes_by_mount,
                pending: maps.deletes_pending,
                forgotten: HashMap::new(),
            },
            heartbeat_files: maps.heartbeat_files,
            proc_names: maps.proc_names,
            killed: maps.killed,
            config: maps.config,
            delete_sample: None,
        };
        (counters, maps.events)
    }

    /// The comm and cgroup id the kernel recorded for a counted process (it may have exited).
    pub fn proc_name(&self, tgid: u32) -> Option<(String, u64)> {
        let n = self.proc_names.get(&tgid, 0).ok()?;
        let end = n.comm.iter().position(|&b| b == 0).unwrap_or(n.comm.len());
        Some((
            String::from_utf8_lossy(&n.comm[..end]).into_owned(),
            n.cgroup_id,
        ))
    }

    /// Counted processes killed by a signal: tgid -> signal.
    pub fn killed(&self) -> HashMap<u32, u32> {
        self.killed.iter().filter_map(Result::ok).collect()
    }

    /// The exact entry counts (per process, directory, filesystem), summed over CPUs.
    pub fn entries(&self) -> crate::kernel::deletes::DeleteTotals {
        self.deletes.read()
    }

    /// Forgets every count kept for the filesystems `gone` (device numbers no longer mounted):
    /// the kernel gives an anonymous device number (tmpfs, overlay, FUSE) to the next
    /// filesystem mounted, which must not start with the old one's counts. Returns the keys
    /// removed. (A CPU's pending deletion slot holding such a key is left out of reads until
    /// it changes; the programs then move it into its map again: one key per CPU at most.)
    pub fn forget_filesystems(&mut self, gone: &std::collections::HashSet<u32>) -> usize {
        fn drop_keys<K: aya::Pod, V: aya::Pod>(
            map: &mut PerCpuHashMap<MapData, K, V>,
            gone: impl Fn(&K) -> bool,
        ) -> usize {
            let keys: Vec<K> = map
                .keys()
                .filter_map(Result::ok)
                .filter(|k| gone(k))
                .collect();
            keys.iter().filter(|k| map.remove(k).is_ok()).count()
        }
        if gone.is_empty() {
            return 0;
        }
        let mut n = drop_keys(&mut self.errors, |k: &ErrorKey| gone.contains(&k.dev));
        self.deletes.forget_pending(gone);
        n += drop_keys(&mut self.deletes.by_dir, |k: &DirKey| gone.contains(&k.dev));
        n += drop_keys(&mut self.deletes.by_mount, |d: &u32| gone.contains(d));
        let files: Vec<DirKey> = self
            .heartbeat_files
            .keys()
            .filter_map(Result::ok)
            .filter(|k| gone.contains(&k.dev))
            .collect();
        n + files
            .iter()
            .filter(|k| self.heartbeat_files.remove(k).is_ok())
            .count()
    }

    /// Adds the (dev, inode) of every configured heartbeat file that exists now.
    pub fn refresh_heartbeat_files(&mut self, files: &[std::path::PathBuf]) {
        for key in heartbeat_keys(files) {
            if let Err(e) = self.heartbeat_files.insert(key, 1, 0) {
                tracing::warn!(error = %e, "cannot register a heartbeat file");
            }
        }
    }

    /// Gives the programs the current `CLOCK_REALTIME - CLOCK_MONOTONIC` (they tell refreshes,
    /// which set times to now, from restored times with it); every second, so a stepped clock
    /// is followed.
    pub fn refresh_clock(&mut self) {
        let offset = crate::node::clock::Clock::new().realtime_offset_ns();
        let res = self.config.get(&0, 0).and_then(|mut c| {
            if c.realtime_offset_ns.abs_diff(offset) < 1_000_000 {
                return Ok(());
            }
            c.realtime_offset_ns = offset;
            self.config.set(0, c, 0)
        });
        if let Err(e) = res {
            tracing::warn!(error = %e, "cannot update the kernel's clock offset");
        }
    }

    /// Changes how often successful deletions get a detail record (0 none, 1 all, N 1 in N),
    /// live: the programs read it on every call.
    /// Returns whether it changed.
    pub fn set_delete_sample(&mut self, n: u32) -> bool {
        if self.delete_sample == Some(n) {
            return false;
        }
        self.delete_sample = Some(n);
        let res = self.config.get(&0, 0).and_then(|mut c| {
            c.delete_sample = n;
            self.config.set(0, c, 0)
        });
        if let Err(e) = res {
            tracing::warn!(error = %e, "cannot update the kernel's deletion sampling");
        }
        true
    }

    fn per_cpu(&self, slot: u32) -> Vec<u64> {
        self.counters
            .get(&slot, 0)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Kernel ring drops and total failures only: cheap enough for every second (no mount
    /// table, no per-process or per-directory maps).
    pub fn light(&self) -> (u64, u64) {
        let drops = self.per_cpu(COUNTER_RING_DROPS).iter().sum();
        let errors = self
            .errors
            .iter()
            .filter_map(Result::ok)
            .map(|(_, v)| v.iter().sum::<u64>())
            .sum();
        (drops, errors)
    }

    /// Every count now; `pid`: `deletes_by_process` holds that process's row alone (whatever
    /// its rank) instead of the busiest.
    pub fn snapshot(
        &self,
        reader: &ReaderStats,
        decode_errors: u64,
        pid: Option<u32>,
    ) -> StatsSnapshot {
        let drops = self.per_cpu(COUNTER_RING_DROPS);
        let sum = |slot| self.per_cpu(slot).iter().sum::<u64>();
        // Mounts are named as the node names them.
        let mounts = crate::node::mounts::MountTable::node();
        let mut errors: Vec<ErrorCount> = self
            .errors
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| ErrorCount {
                syscall: observer_common::syscall::name(k.syscall),
                errno: k.errno,
                errno_name: crate::node::errno::name(k.errno),
                dev: crate::node::dev_string(k.dev),
                mount: mounts.mount_point(k.dev).map(String::from),
                count: v.iter().sum(),
            })
            .collect();
        errors.sort_by(|a, b| (a.syscall, a.errno, &a.dev).cmp(&(b.syscall, b.errno, &b.dev)));
        let deletes = self.deletes.read();
        let mut by_mount: Vec<DeleteRow> = deletes
            .by_mount
            .iter()
            .map(|(&dev, v)| {
                let d = crate::node::dev_string(dev);
                let mut row = DeleteRow {
                    mount: mounts.mount_point(dev).map(String::from),
                    dev: Some(d),
                    ..Default::default()
                };
                row.add(v);
                row
            })
            .collect();
        by_mount.sort_by_key(|r| std::cmp::Reverse(r.total()));
        let rows = deletes
            .by_proc
            .iter()
            .filter(|(p, _)| pid.is_none_or(|want| want == **p));
        let by_process = top(rows.map(|(&pid, v)| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .ok()
                .map(|c| c.trim().to_string());
            let mut row = DeleteRow {
                pid: Some(pid),
                comm,
                ..Default::default()
            };
            row.add(v);
            row
        }));
        let by_dir = top(deletes.by_dir.iter().map(|(k, v)| {
            let d = crate::node::dev_string(k.dev);
            let mut row = DeleteRow {
                mount: mounts.mount_point(k.dev).map(String::from),
                dev: Some(d),
                ino: Some(k.ino),
                ..Default::default()
            };
            row.add(v);
            row
        }));
        StatsSnapshot {
            kernel_ring_drops: drops.iter().sum(),
            kernel_ring_drops_per_cpu: drops,
            kernel_events: sum(COUNTER_EVENTS),
            kernel_path_incomplete: sum(COUNTER_PATH_INCOMPLETE),
            kernel_error_keys_full: sum(COUNTER_ERROR_KEYS_FULL),
            kernel_filtered: sum(COUNTER_FILTERED),
            heartbeats_ok: sum(COUNTER_HEARTBEAT_OK),
            heartbeats_failed: sum(COUNTER_HEARTBEAT_FAILED),
            heartbeats_times_set: sum(COUNTER_TIMES_SET),
            heartbeats_coalesced: sum(COUNTER_REFRESH_COALESCED),
            userspace_received: reader.received.load(Ordering::Relaxed),
            userspace_queue_drops: reader.queue_drops.load(Ordering::Relaxed),
            decode_errors,
            errors,
            deletes_by_mount: by_mount,
            deletes_by_process: by_process,
            deletes_by_dir: by_dir,
        }
    }
}

fn top(rows: impl Iterator<Item = DeleteRow>) -> Vec<DeleteRow> {
    let mut v: Vec<DeleteRow> = rows.collect();
    v.sort_by_key(|r| std::cmp::Reverse(r.total()));
    v.truncate(TOP);
    v
}

/// `(dev, inode)` keys of the heartbeat files that exist now (missing ones are skipped: a lock
/// file may appear later and is picked up by the next resolution).
pub fn heartbeat_keys(files: &[std::path::PathBuf]) -> Vec<DirKey> {
    use std::os::unix::fs::MetadataExt as _;
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| DirKey {
            dev: crate::node::kernel_dev(m.dev()),
            _pad0: 0,
            ino: m.ino(),
        })
        .collect()
}

#[derive(Serialize)]
struct StatsLine<'a> {
    r#type: &'static str,
    #[serde(flatten)]
    stats: &'a StatsSnapshot,
}

impl StatsSnapshot {
    /// The `{"type":"stats",...}` line (no newline).
    pub fn line(&self) -> String {
        serde_json::to_string(&StatsLine {
            r#type: "stats",
            stats: self,
        })
        .unwrap_or_else(|e| format!("{{\"type\":\"error\",\"error\":\"{e}\"}}"))
    }
}
