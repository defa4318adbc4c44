//! Prometheus exposition (OpenMetrics text, prometheus-client). Every label is bounded: mounts,
//! syscalls and errnos are finite sets; path prefixes and workloads are the top-K of bounded
//! tables plus `other`. No raw path, pid or inode labels.

mod aggregates;
mod capacity;
mod kernel;
mod locks;
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
    deleted_open: Vec<crate::node::deleted::HeldOnMount>,
    own: [(&'static str, u64); 8],
    /// Records from other mount namespaces: put in the node's view, left in the caller's.
    views: [(&'static str, u64); 2],
    stream_clients: usize,
    /// Per door (`api`, `metrics`): accepted, refused, header_timeout, stalled.
    doors: [(&'static str, [u64; 4]); 2],
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
    // One statement per lock (as above).
    let (capacity, deleted_open) = {
        let c = api.capacity();
        (c.rows(), c.deleted_open.by_mount.clone())
    };
    let scrape = Scrape {
        version: api.info.version,
        probe_mode: api.info.probe_mode,
        kernel: api.info.kernel.clone(),
        stats: api.stats(),
        top,
        capacity,
        deleted_open,
        stream_clients: api.record.clients(),
        doors: [("api", &api.doors[0]), ("metrics", &api.doors[1])].map(|(name, c)| {
            let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            (
                name,
                [
                    n(&c.accepted),
                    n(&c.refused),
                    n(&c.header_timeouts),
                    n(&c.stalled),
                ],
            )
        }),
        top_k: api.config.file.aggregate.top_k,
        locks,
        purge: purge::PurgeScrape::of(api),
        own: [
            ("written", rc.dumps_written.load(Ordering::Relaxed)),
            ("failed", rc.dumps_failed.load(Ordering::Relaxed)),
            ("skipped", rc.dumps_skipped.load(Ordering::Relaxed)),
            ("removed", rc.dumps_removed.load(Ordering::Relaxed)),
            ("stream_lagged", rc.stream_lagged.load(Ordering::Relaxed)),
            (
                "stdout_failures",
                api.stdout.failures.load(Ordering::Relaxed),
            ),
            ("recorder_rotated", api.record.rotated()),
            ("userspace_filtered", ev.filtered.load(Ordering::Relaxed)),
        ],
        views: [
            ("node", ev.paths_translated.load(Ordering::Relaxed)),
            ("caller", ev.paths_untranslated.load(Ordering::Relaxed)),
        ],
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

pub(super) type Labels<'a> = Vec<(&'static str, String)>;

/// Label values with control characters escaped as text (`\x1b`): names come from watched
/// processes. Quotes, backslashes and newlines are escaped by the exposition encoder.
fn safe(labels: Labels<'_>) -> Labels<'_> {
    labels
        .into_iter()
        .map(|(k, v)| (k, crate::node::text::label_value(&v)))
        .collect()
}

pub(super) fn counters<'a>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels<'a>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (labels, v) in rows {
        ConstCounter::new(v).encode(m.encode_family(&safe(labels))?)?;
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
        ConstGauge::new(v).encode(m.encode_family(&safe(labels))?)?;
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
        self.encode_kernel(&mut enc)?;
        self.encode_capacity(&mut enc)?;
        self.encode_aggregates(&mut enc)?;
        self.encode_locks(&mut enc)?;
        self.purge.encode(&mut enc)
    }
}
