//! `observer top`: a refreshing table of the heaviest path prefixes, processes and workloads.

use std::{fmt::Write as _, time::Duration};

use serde_json::Value;

/// A name from the daemon, escaped for the terminal.
pub fn text(v: &Value) -> crate::node::text::Printable<'_> {
    crate::node::text::Printable(v.as_str().unwrap_or("?"))
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Total failures in a counts object (`errors: {errno: {syscall: n}}`).
fn errors(c: &Value) -> u64 {
    c["errors"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(Value::as_object)
                .flat_map(|s| s.values().map(num))
                .sum()
        })
        .unwrap_or(0)
}

fn errno_list(c: &Value) -> String {
    c["errors"]
        .as_object()
        .map(|m| crate::node::text::printable(&m.keys().cloned().collect::<Vec<_>>().join(",")))
        .unwrap_or_default()
}

/// Renders a `/top` answer as text tables.
pub fn render(v: &Value) -> String {
    let mut s = String::new();
    let t = &v["top"];
    let _ = writeln!(
        s,
        "fsobserver top — node {} ({} probes), {} events",
        text(&v["node"]),
        text(&v["probe_mode"]),
        num(&t["events"])
    );
    if let Some(caps) = v["capacity"].as_array().filter(|c| !c.is_empty()) {
        let _ = writeln!(
            s,
            "\n{:<32} {:>14} {:>12} {:>14}",
            "MOUNT", "FREE BYTES", "FREE INODES", "FULL IN"
        );
        for c in caps {
            let full = c["bytes_full_in_secs"]
                .as_f64()
                .map(|x| humantime::format_duration(Duration::from_secs(x as u64)).to_string())
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "{:<32} {:>14} {:>12} {:>14}",
                text(&c["mount"]),
                num(&c["free_bytes"]),
                num(&c["free_inodes"]),
                full
            );
        }
    }
    let _ = writeln!(
        s,
        "\n{:<48} {:>8} {:>8} {:>12} ERRNOS",
        "PATH PREFIX", "ERRORS", "DELETES", "HB FAILED"
    );
    for p in t["paths"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "{:<48} {:>8} {:>8} {:>12} {}",
            text(&p["path_prefix"]),
            errors(p),
            num(&p["deletes"]),
            num(&p["heartbeats_failed"]),
            errno_list(p)
        );
    }
    let _ = writeln!(
        s,
        "\n{:<8} {:<16} {:<24} {:>8} {:>8} {:>12}",
        "PID", "COMM", "WORKLOAD", "ERRORS", "DELETES", "HB FAILED"
    );
    for p in t["processes"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "{:<8} {:<16} {:<24} {:>8} {:>8} {:>12}",
            num(&p["pid"]),
            text(&p["comm"]),
            text(&p["workload"]),
            errors(p),
            num(&p["deletes"]),
            num(&p["heartbeats_failed"])
        );
    }
    s
}

pub fn run(
    client: &super::Client,
    interval: Duration,
    once: bool,
    json: bool,
) -> anyhow::Result<()> {
    super::exit_zero_on_sigint();
    loop {
        let text = client.get_text("/top", &[])?;
        if json {
            println!("{text}");
        } else {
            let v: Value = serde_json::from_str(&text)?;
            if !once {
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", render(&v));
        }
        if once {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}
