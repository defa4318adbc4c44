//! `cargo xtask bench --compare OLD.json`: this run's figures next to an earlier run's (another
//! commit's `--json` output), with the change. Figures missing from either side show `n/a`, so
//! reports of older shapes still compare on what they share.

use serde_json::Value;

/// (label, JSON pointer, lower is better) for the figures outside the workload table.
const FIGURES: &[(&str, &str, bool)] = &[
    (
        "storm, stdout: daemon CPU µs per event",
        "/enospc_storm/stdout/daemon_cpu_us_per_event",
        true,
    ),
    (
        "storm, stdout off: daemon CPU µs per event",
        "/enospc_storm/no_stdout/daemon_cpu_us_per_event",
        true,
    ),
    (
        "storm, stdout: events lost",
        "/enospc_storm/stdout/lost",
        true,
    ),
    (
        "storm, stdout: peak RSS KiB",
        "/enospc_storm/stdout/daemon_rss_peak_kib",
        true,
    ),
    (
        "steady 10k/s, stdout: daemon cores",
        "/steady_10k/stdout/daemon_cores",
        true,
    ),
    (
        "steady 10k/s, stdout off: daemon cores",
        "/steady_10k/no_stdout/daemon_cores",
        true,
    ),
    (
        "tail stream: events/s",
        "/tail_stream/tail_events_per_s",
        false,
    ),
    (
        "lock flag latency p99 ms",
        "/lock_flag_latency/p99_ms",
        true,
    ),
    (
        "purge: files removed/s",
        "/purge/files_removed_per_s",
        false,
    ),
];

fn num(v: &Value, pointer: &str) -> Option<f64> {
    v.pointer(pointer).and_then(Value::as_f64)
}

fn cell(v: Option<f64>) -> String {
    match v {
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.3}"),
        None => "n/a".into(),
    }
}

/// One row: label, old, new, change in percent, and `better`/`worse` beyond 3 %.
fn row(label: &str, old: Option<f64>, new: Option<f64>, lower_is_better: bool) -> String {
    let change = match (old, new) {
        (Some(o), Some(n)) if o != 0.0 => {
            let pct = (n - o) / o.abs() * 100.0;
            let verdict = if pct.abs() < 3.0 {
                ""
            } else if (pct < 0.0) == lower_is_better {
                " better"
            } else {
                " worse"
            };
            format!("{pct:+.1} %{verdict}")
        }
        _ => "n/a".into(),
    };
    format!("| {label} | {} | {} | {change} |", cell(old), cell(new))
}

/// The comparison as a Markdown table (header included).
pub fn compare(old: &Value, new: &Value) -> Vec<String> {
    let mut out = vec![
        format!(
            "| figure | old ({}) | new ({}) | change |",
            old.pointer("/header/commit")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            new.pointer("/header/commit")
                .and_then(Value::as_str)
                .unwrap_or("?")
        ),
        "| --- | --- | --- | --- |".into(),
    ];
    let workloads = |v: &Value, key: &str| -> Vec<(String, Option<f64>)> {
        v["workloads"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|w| {
                        (
                            w["workload"].as_str().unwrap_or("?").to_string(),
                            w[key].as_f64(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    for (key, label) in [("ratio", "ratio"), ("added_vs_peer", "added vs bpftrace")] {
        let old_w = workloads(old, key);
        for (name, value) in workloads(new, key) {
            let before = old_w.iter().find(|(n, _)| *n == name).and_then(|w| w.1);
            if value.is_some() || before.is_some() {
                out.push(row(&format!("{name}: {label}"), before, value, true));
            }
        }
    }
    for (label, pointer, lower) in FIGURES {
        let (o, n) = (num(old, pointer), num(new, pointer));
        if o.is_some() || n.is_some() {
            out.push(row(label, o, n, *lower));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn rows_show_change_and_direction_and_tolerate_old_shapes() {
        let old = json!({
            "header": {"commit": "aaa"},
            "workloads": [{"workload": "pwrite 64 B", "ratio": 1.20}, {"workload": "gone", "ratio": 2.0}],
            "enospc_storm": {"daemon_cpu_s": 2.9},
            "steady_10k": {"daemon_cores": 0.052},
        });
        let new = json!({
            "header": {"commit": "bbb"},
            "workloads": [{"workload": "pwrite 64 B", "ratio": 1.10}, {"workload": "new one", "ratio": 1.0}],
            "enospc_storm": {"stdout": {"daemon_cpu_us_per_event": 1.0, "lost": 0}},
            "steady_10k": {"stdout": {"daemon_cores": 0.02}},
            "tail_stream": {"tail_events_per_s": 200000.0},
        });
        let t = super::compare(&old, &new);
        assert_eq!(t[0], "| figure | old (aaa) | new (bbb) | change |");
        assert!(
            t.contains(&"| pwrite 64 B: ratio | 1.200 | 1.100 | -8.3 % better |".to_string()),
            "{t:#?}"
        );
        assert!(t.contains(&"| new one: ratio | n/a | 1.000 | n/a |".to_string()));
        assert!(t.contains(
            &"| storm, stdout: daemon CPU µs per event | n/a | 1.000 | n/a |".to_string()
        ));
        assert!(t.contains(&"| tail stream: events/s | n/a | 200000 | n/a |".to_string()));
        assert!(
            !t.iter().any(|l| l.contains("stdout off")),
            "absent on both sides: no row"
        );
        let worse = super::row("x", Some(100.0), Some(110.0), true);
        assert_eq!(worse, "| x | 100 | 110 | +10.0 % worse |");
        assert_eq!(
            super::row("y", Some(1.0), Some(1.01), true),
            "| y | 1.000 | 1.010 | +1.0 % |"
        );
        assert_eq!(
            super::row("z", Some(10.0), Some(20.0), false),
            "| z | 10.000 | 20.000 | +100.0 % better |"
        );
    }
}
