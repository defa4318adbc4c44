//! The consumer under load: ENOSPC storms with stdout on (every event rendered and written)
//! and off (the DaemonSet's configuration), and a steady 10,000 failures/s.

use std::{path::Path, process::Command, time::Duration};

use serde_json::{Value, json};

use super::harness::{Observer, Scratch, cpu_seconds, field, median, rss_peak_kib};
use crate::toolchain::output as run;

/// Failures per storm.
const N: u64 = 1_000_000;

/// `rounds` storms of 1,000,000 failing writes as fast as one thread can, per output setting:
/// events/s delivered, losses, the daemon's CPU per event (median) and what one consumer core
/// could take at that cost, peak RSS.
pub fn storms(
    observer: &Path,
    helper: &Path,
    s: &Scratch,
    out_dir: &Path,
    rounds: usize,
) -> anyhow::Result<Value> {
    let mut report = serde_json::Map::new();
    for (name, extra) in [("stdout", &[][..]), ("no_stdout", &["--no-stdout"][..])] {
        let mut runs = Vec::new();
        for _ in 0..rounds {
            runs.push(storm(observer, helper, s, out_dir, extra)?);
        }
        let pick = |k: &str| {
            let mut v: Vec<f64> = runs.iter().filter_map(|r| r[k].as_f64()).collect();
            median(&mut v)
        };
        let us = pick("daemon_cpu_us_per_event");
        let lost: u64 = runs
            .iter()
            .map(|r| {
                r["kernel_ring_drops"].as_u64().unwrap_or(0)
                    + r["userspace_queue_drops"].as_u64().unwrap_or(0)
            })
            .sum();
        println!(
            "ENOSPC storm ({name}): {N} failures x {rounds}; delivered {:.0}/s (median); {lost} lost in all; daemon {us:.3} CPU µs per event (median) = {:.0} events/s per consumer core; peak RSS {:.0} MiB",
            pick("events_delivered_per_s"),
            1e6 / us,
            pick("daemon_rss_peak_kib") / 1024.0
        );
        report.insert(
            name.into(),
            json!({
                "daemon_cpu_us_per_event": us,
                "events_per_core_s": 1e6 / us,
                "events_delivered_per_s": pick("events_delivered_per_s"),
                "lost": lost,
                "daemon_rss_peak_kib": pick("daemon_rss_peak_kib"),
                "runs": runs,
            }),
        );
    }
    Ok(Value::Object(report))
}

fn storm(
    observer: &Path,
    helper: &Path,
    s: &Scratch,
    out_dir: &Path,
    extra: &[&str],
) -> anyhow::Result<Value> {
    let obs = Observer::start_with(observer, out_dir, extra)?;
    let pid = obs.pid();
    let cpu0 = cpu_seconds(pid);
    let out = run(Command::new(helper).args(["storm", &s.path("full/filler"), &N.to_string()]))?;
    let secs = field(&out, "elapsed_ns")? / 1e9;
    std::thread::sleep(Duration::from_millis(500));
    let cpu = cpu_seconds(pid) - cpu0;
    let rss = rss_peak_kib(pid);
    let stats = obs.stop()?;
    let received = stats["userspace_received"].as_u64().unwrap_or(0);
    Ok(json!({
        "failures": N,
        "seconds": secs,
        "failures_per_s": N as f64 / secs,
        "events_delivered": received,
        "events_delivered_per_s": received as f64 / secs,
        "kernel_ring_drops": stats["kernel_ring_drops"],
        "userspace_queue_drops": stats["userspace_queue_drops"],
        "exact_count": stats["errors"],
        "daemon_cpu_s": cpu,
        "daemon_cpu_us_per_event": cpu * 1e6 / received.max(1) as f64,
        "daemon_rss_peak_kib": rss,
    }))
}

/// Daemon CPU while failures arrive at a steady 10,000/s for 5 s.
pub fn steady_rate(
    observer: &Path,
    helper: &Path,
    s: &Scratch,
    out_dir: &Path,
) -> anyhow::Result<Value> {
    let mut report = serde_json::Map::new();
    for (name, extra) in [("stdout", &[][..]), ("no_stdout", &["--no-stdout"][..])] {
        let obs = Observer::start_with(observer, out_dir, extra)?;
        let pid = obs.pid();
        let cpu0 = cpu_seconds(pid);
        let out =
            run(Command::new(helper).args(["storm-rate", &s.path("full/filler"), "10000", "5"]))?;
        let secs = field(&out, "elapsed_ns")? / 1e9;
        let cores = (cpu_seconds(pid) - cpu0) / secs;
        let rss = rss_peak_kib(pid);
        let stats = obs.stop()?;
        println!(
            "steady 10k failures/s for {secs:.1} s ({name}): daemon {cores:.3} cores, peak RSS {} MiB, delivered {}",
            rss / 1024,
            stats["userspace_received"]
        );
        report.insert(
            name.into(),
            json!({"seconds": secs, "daemon_cores": cores, "daemon_rss_peak_kib": rss, "delivered": stats["userspace_received"]}),
        );
    }
    Ok(Value::Object(report))
}
