//! Bounds and accuracy of the daemon's aggregates on the real kernel: a million distinct paths
//! keep Prometheus series and memory bounded; time-to-full of a steady fill is accurate.

use std::{
    io::Write as _,
    time::{Duration, Instant},
};

use integration_tests::{Mount, Observer, in_vm, metric_value, workload};

#[test]
fn a_million_distinct_paths_keep_series_and_memory_bounded() {
    // Under software emulation a million files take too long; the bound is the same (5,000
    // leaves are still five times what the table may hold).
    let n: u64 = if in_vm() { 5_000 } else { 1_000_000 };
    let m = Mount::tmpfs("size=256m");
    let obs = Observer::start(&[
        "--watch-mount",
        m.dir.to_str().unwrap(),
        "--delete-sample",
        "1",
        "--no-stdout",
        "--set",
        "aggregate.max_paths=1000",
        "--set",
        "aggregate.top_k=10",
    ]);
    let w = workload(&["churn", m.dir.to_str().unwrap(), &n.to_string()]);
    assert_eq!(w.get("failed"), "0");
    // Every leaf directory is its own rolled-up key: far more keys than the table holds.
    obs.wait_metric("fsobserver_aggregate_evicted_total{table=\"paths\"}", |v| {
        v >= (n / 2) as f64
    });
    let text = obs.metrics();
    let series: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let prefixes: std::collections::BTreeSet<&str> = series
        .iter()
        .filter_map(|l| l.split("path_prefix=\"").nth(1)?.split('"').next())
        .collect();
    assert!(prefixes.len() <= 11, "top 10 + other: {prefixes:?}");
    assert!(series.len() <= 120, "{} series:\n{text}", series.len());
    assert!(metric_value(&text, "fsobserver_aggregate_keys{table=\"paths\"}").unwrap() <= 1000.0);
    let rss = obs.rss_kib();
    assert!(rss < 160 * 1024, "daemon RSS {rss} KiB exceeds 160 MiB");
    eprintln!("{n} paths: {} series, RSS {} MiB", series.len(), rss / 1024);
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: userspace behaviour, the same on every kernel"
)]
fn time_to_full_of_a_steady_fill_is_within_a_quarter() {
    let m = Mount::tmpfs("size=24m");
    let obs = Observer::start(&[
        "--watch-mount",
        m.dir.to_str().unwrap(),
        "--set",
        "capacity.sample_interval_ms=200",
        "--set",
        "capacity.window_secs=5",
    ]);
    // 64 KiB every 20 ms (3.2 MiB/s): full in about 7.5 s.
    let mut f = std::fs::File::create(m.dir.join("fill")).unwrap();
    let chunk = vec![1u8; 64 << 10];
    let start = Instant::now();
    let mut predicted = None;
    let mut i = 0u32;
    let full_at = loop {
        let due = start + Duration::from_millis(20) * i;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if f.write_all(&chunk).is_err() {
            break Instant::now();
        }
        i += 1;
        if predicted.is_none() && start.elapsed() > Duration::from_secs(3) {
            let cap = &obs.top()["capacity"][0];
            let secs = cap["bytes_full_in_secs"]
                .as_f64()
                .unwrap_or_else(|| panic!("no time-to-full while filling: {cap}"));
            predicted = Some((Instant::now(), secs));
        }
        assert!(start.elapsed() < Duration::from_secs(60), "never filled");
    };
    let (at, secs) = predicted.expect("a prediction was taken");
    let actual = full_at.duration_since(at).as_secs_f64();
    let err = (secs - actual).abs() / actual;
    eprintln!(
        "predicted {secs:.2} s, filled after {actual:.2} s ({:.0}% off)",
        err * 100.0
    );
    assert!(err <= 0.25, "predicted {secs:.2} s, actual {actual:.2} s");
}
