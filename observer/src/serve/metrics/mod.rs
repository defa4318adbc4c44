//! Prometheus exposition (OpenMetrics text, prometheus-client). Every label is bounded: mounts,
//! syscalls and errnos are finite sets; path prefixes and workloads are the top-K of bounded
//! tables plus `other`. No raw path, pid or inode labels.

mod purge;

use std::sync::atomic::Ordering;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::{
    analyze::{aggregate::TopSnapshot, capacity::CapacityRow},
    kernel::counters::StatsSnapshot,
    serve::Api,
};

/// Label value for a failure whose name the kernel side did not resolve to a filesystem.
pub const UNRESOLVED_MOUNT: &str = "(absolute-path)";
/// Label value for everything outside the top K.
pub const OTHER: &str = "other";

/// Locks by state, failed refreshes by errno, steals.
type LockScrape = (Vec<(&'static str, u64)>, Vec<(String, u64)>, u64);

/// What one scrape shows, copied out of the stages so encoding holds no lock.
#[derive(Debug)]
struct Scrape {
    version: &'static str,
    probe_mode: &'static str,
    kernel: String,
    stats: StatsSnapshot,
    top: TopSnapshot,
    capacity: Vec<CapacityRow>,
    own: [(&'static str, u64); 7],
    stream_clients: usize,
    top_k: usize,
    /// Locks by state, failed refreshes by errno, steals (`None`: lock tracking off).
    locks: Option<LockScrape>,
    purge: purge::PurgeScrape,
}

pub fn render(api: &Api) -> Result<String, std::fmt::Error> {
    let (rc, ev) = (&api.record.counters, &api.events);
    // One statement per lock: a guard in a struct literal would live to its end.
    let (top, locks) = {
        let analysis = api.analysis();
        let locks = analysis.locks.as_ref().map(|t| {
            use crate::analyze::locks::LockState::*;
            let states = [
                (Healthy, "healthy"),
                (HeartbeatFailing, "heartbeat-failing"),
                (HolderDead, "holder-dead"),
                (Released, "released"),
                (Stolen, "stolen"),
            ]
            .map(|(s, name)| (name, t.locks().filter(|l| l.state == s).count() as u64))
            .to_vec();
            let failures = t
                .failures_by_errno
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            (states, failures, t.steals)
        });
        (analysis.agg.top(api.config.file.aggregate.top_k), locks)
    };
    let scrape = Scrape {
        version: api.info.version,
        probe_mode: api.info.probe_mode,
        kernel: api.info.kernel.clone(),
        stats: api.stats(),
        top,
        capacity: api.capacity().rows(),
        stream_clients: api.record.clients(),
        top_k: api.config.file.aggregate.top_k,
        locks,
        purge: purge::PurgeScrape::of(api),
        own: [
            ("written", rc.dumps_written.load(Ordering::Relaxed)),
            ("failed", rc.dumps_failed.load(Ordering::Relaxed)),
            ("skipped", rc.dumps_skipped.load(Ordering::Relaxed)),
            ("stream_lagged", rc.stream_lagged.load(Ordering::Relaxed)),
            (
                "stdout_failures",
                api.stdout.failures.load(Ordering::Relaxed),
            ),
            ("recorder_rotated", api.record.rotated()),
            ("userspace_filtered", ev.filtered.load(Ordering::Relaxed)),
        ],
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

pub(super) type Labels<'a> = Vec<(&'static str, String)>;

pub(super) fn counters<'a>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels<'a>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (labels, v) in rows {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

pub(super) fn gauges<'a>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels<'a>, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, ConstGauge::new(0f64).metric_type())?;
    for (labels, v) in rows {
        if labels.is_empty() {
            // A lone unlabelled sample (no `{}`).
            return ConstGauge::new(v).encode(m);
        }
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A counter without labels.
fn single(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn mount_label(mount: &Option<String>, dev: &str) -> String {
    match mount {
        Some(m) => m.clone(),
        None if dev == "0:0" => UNRESOLVED_MOUNT.into(),
        None => format!("dev:{dev}"),
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &self.stats;
        gauges(
            &mut enc,
            "fsobserver_build_info",
            "Version, probe mode and kernel of this observer (value 1)",
            [(
                vec![
                    ("version", self.version.to_string()),
                    ("probe_mode", self.probe_mode.to_string()),
                    ("kernel", self.kernel.clone()),
                ],
                1.0,
            )],
        )?;
        counters(
            &mut enc,
            "fsobserver_syscall_errors",
            "Failed filesystem syscalls, counted in the kernel (exact)",
            s.errors.iter().map(|e| {
                (
                    vec![
                        ("syscall", e.syscall.to_string()),
                        ("errno", e.errno_name.clone()),
                        ("mount", mount_label(&e.mount, &e.dev)),
                    ],
                    e.count,
                )
            }),
        )?;
        counters(
            &mut enc,
            "fsobserver_deletes",
            "Deletions per filesystem, counted in the kernel (op: file, dir, rename, failed)",
            s.deletes_by_mount.iter().flat_map(|r| {
                let m = mount_label(&r.mount, r.dev.as_deref().unwrap_or("0:0"));
                [
                    ("file", r.files),
                    ("dir", r.dirs),
                    ("rename", r.renames),
                    ("failed", r.failed),
                ]
                .map(|(op, v)| (vec![("mount", m.clone()), ("op", op.to_string())], v))
            }),
        )?;
        counters(
            &mut enc,
            "fsobserver_heartbeats",
            "Lock heartbeats (utimes family, configured lock-file writes) by result",
            [("ok", s.heartbeats_ok), ("failed", s.heartbeats_failed)]
                .map(|(r, v)| (vec![("result", r.to_string())], v)),
        )?;
        for (name, help, v) in [
            (
                "fsobserver_kernel_events",
                "Records the kernel wrote to the ring",
                s.kernel_events,
            ),
            (
                "fsobserver_kernel_ring_drops",
                "Records lost because the kernel ring was full",
                s.kernel_ring_drops,
            ),
            (
                "fsobserver_kernel_filtered",
                "Calls skipped by the mount/comm/cgroup filters",
                s.kernel_filtered,
            ),
            (
                "fsobserver_userspace_queue_drops",
                "Records lost because the userspace queue was full",
                s.userspace_queue_drops,
            ),
            (
                "fsobserver_decode_errors",
                "Records that failed to decode",
                s.decode_errors,
            ),
        ] {
            single(&mut enc, name, help, v)?;
        }
        counters(
            &mut enc,
            "fsobserver_self",
            "The observer's own losses and failures (stream_lagged, stdout_failures, recorder_rotated, userspace_filtered)",
            self.own[3..]
                .iter()
                .map(|(k, v)| (vec![("what", k.to_string())], *v)),
        )?;
        counters(
            &mut enc,
            "fsobserver_dumps",
            "Flight-recorder burst dumps by result (written, failed, skipped)",
            self.own[..3]
                .iter()
                .map(|(k, v)| (vec![("result", k.to_string())], *v)),
        )?;
        gauges(
            &mut enc,
            "fsobserver_stream_clients",
            "Clients connected to /events",
            [(Vec::new(), self.stream_clients as f64)],
        )?;
        let cap = &self.capacity;
        let m = |r: &CapacityRow| vec![("mount", r.mount.clone())];
        gauges(
            &mut enc,
            "fsobserver_mount_size_bytes",
            "Size of a watched filesystem",
            cap.iter().map(|r| (m(r), r.size_bytes as f64)),
        )?;
        gauges(
            &mut enc,
            "fsobserver_mount_free_bytes",
            "Bytes available to unprivileged users",
            cap.iter().map(|r| (m(r), r.free_bytes as f64)),
        )?;
        gauges(
            &mut enc,
            "fsobserver_mount_free_inodes",
            "Inodes available",
            cap.iter().map(|r| (m(r), r.free_inodes as f64)),
        )?;
        gauges(
            &mut enc,
            "fsobserver_mount_fill_rate",
            "Bytes or inodes consumed per second over the capacity window (negative: freed)",
            cap.iter().flat_map(|r| {
                [("bytes", r.bytes_per_sec), ("inodes", r.inodes_per_sec)].map(|(res, v)| {
                    (
                        [("mount", r.mount.clone()), ("resource", res.to_string())].to_vec(),
                        v,
                    )
                })
            }),
        )?;
        gauges(
            &mut enc,
            "fsobserver_mount_time_to_full_seconds",
            "Seconds until the filesystem is full at the current rate (absent when not filling)",
            cap.iter().flat_map(|r| {
                [
                    ("bytes", r.bytes_full_in_secs),
                    ("inodes", r.inodes_full_in_secs),
                ]
                .into_iter()
                .filter_map(|(res, v)| {
                    Some((
                        [("mount", r.mount.clone()), ("resource", res.to_string())].to_vec(),
                        v?,
                    ))
                })
            }),
        )?;
        let t = &self.top;
        let errno_rows = |key: (&'static str, String), c: &crate::analyze::table::Counts| {
            c.errors
                .iter()
                .map(|(errno, by)| {
                    (
                        vec![key.clone(), ("errno", errno.clone())],
                        by.values().sum(),
                    )
                })
                .collect::<Vec<_>>()
        };
        counters(
            &mut enc,
            "fsobserver_path_errors",
            "Failures under the top-K path prefixes (rolled up; the rest is path_prefix=\"other\")",
            t.paths
                .iter()
                .flat_map(|p| errno_rows(("path_prefix", p.path_prefix.clone()), &p.counts))
                .chain(errno_rows(("path_prefix", OTHER.into()), &t.paths_other)),
        )?;
        counters(
            &mut enc,
            "fsobserver_path_failed_write_bytes",
            "Bytes that failed writes tried to write, by top-K path prefix",
            t.paths
                .iter()
                .map(|p| {
                    (
                        vec![("path_prefix", p.path_prefix.clone())],
                        p.counts.bytes_failed,
                    )
                })
                .chain([(
                    vec![("path_prefix", OTHER.into())],
                    t.paths_other.bytes_failed,
                )]),
        )?;
        counters(
            &mut enc,
            "fsobserver_workload_errors",
            "Failures by top-K workload (namespace/pod, container, or host)",
            t.workloads
                .iter()
                .flat_map(|w| errno_rows(("workload", w.workload.clone()), &w.counts))
                .chain(errno_rows(("workload", OTHER.into()), &t.workloads_other)),
        )?;
        if let Some((states, failures, steals)) = &self.locks {
            gauges(
                &mut enc,
                "fsobserver_locks",
                "Tracked locks by state",
                states
                    .iter()
                    .map(|(s, n)| (vec![("state", s.to_string())], *n as f64)),
            )?;
            counters(
                &mut enc,
                "fsobserver_lock_heartbeat_failures",
                "Failed refreshes of tracked locks by errno",
                failures
                    .iter()
                    .map(|(e, n)| (vec![("errno", e.clone())], *n)),
            )?;
            single(
                &mut enc,
                "fsobserver_lock_steals",
                "Locks removed or replaced by another process while the holder was alive",
                *steals,
            )?;
        }
        gauges(
            &mut enc,
            "fsobserver_leak_suspects",
            "Directories whose creates outpace deletes over the leak window",
            [(Vec::new(), t.leaks.len() as f64)],
        )?;
        gauges(
            &mut enc,
            "fsobserver_leak_net_entries",
            "Net new entries over the leak window of the top-K suspected directories",
            t.leaks
                .iter()
                .take(self.top_k)
                .map(|l| (vec![("path_prefix", l.path_prefix.clone())], l.net as f64)),
        )?;
        gauges(
            &mut enc,
            "fsobserver_aggregate_keys",
            "Keys held in the bounded aggregation tables",
            [
                ("paths", t.paths_tracked),
                ("processes", t.processes_tracked),
            ]
            .map(|(k, v)| (vec![("table", k.to_string())], v as f64)),
        )?;
        counters(
            &mut enc,
            "fsobserver_aggregate_evicted",
            "Keys evicted from the bounded aggregation tables (their counts moved to other)",
            [
                ("paths", t.paths_evicted),
                ("processes", t.processes_evicted),
            ]
            .map(|(k, v)| (vec![("table", k.to_string())], v)),
        )?;
        self.purge.encode(&mut enc)
    }
}
