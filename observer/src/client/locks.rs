//! `observer locks` (a table of tracked locks) and `observer lock-status PATH` (exit code for a
//! contender's script: 0 healthy, 3 heartbeat failing with the holder alive — do not steal,
//! 4 holder dead — safe to steal, 5 unknown).

use std::{fmt::Write as _, time::Duration};

use serde_json::Value;

use super::{Client, top::text};
use crate::node::text::Printable;

fn get_json(client: &Client, query: &[(&str, String)]) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(&client.get_text("/locks", query)?)?)
}

fn ago(now_ns: u64, t: &Value) -> String {
    t.as_u64()
        .map(|t| {
            let d = Duration::from_millis(now_ns.saturating_sub(t) / 1_000_000);
            format!("{} ago", humantime::format_duration(d))
        })
        .unwrap_or_else(|| "-".into())
}

/// One lock as a line of columns.
fn row(l: &Value, now_ns: u64) -> String {
    let holder = &l["holder"];
    let err = l["last_failure"]["errno_name"].as_str().unwrap_or("-");
    format!(
        "{:<18} {:<22} {:<11} {:<10} {:<14} {:<8} {}",
        text(&l["state"]),
        format!("{}[{}]", text(&holder["comm"]), holder["pid"]),
        text(&l["acquired_by"]),
        text(&l["known_by"]),
        ago(now_ns, &l["last_ok_unix_ns"]),
        Printable(err),
        text(&l["path"]),
    )
}

pub fn list(client: &Client, json: bool) -> anyhow::Result<()> {
    let v = get_json(client, &[])?;
    if json {
        println!("{v}");
        return Ok(());
    }
    let now = crate::node::clock::now_unix_ns();
    let mut s = format!(
        "{:<18} {:<22} {:<11} {:<10} {:<14} {:<8} {}\n",
        "STATE", "HOLDER", "ACQUIRED", "KNOWN BY", "LAST OK", "ERROR", "PATH"
    );
    for l in v["locks"].as_array().into_iter().flatten() {
        let _ = writeln!(s, "{}", row(l, now));
    }
    print!("{s}");
    Ok(())
}

/// Prints the state of `path` and returns the exit code. When the daemon cannot say (not
/// reachable, not trusted, too slow), the answer is 5 (unknown) and stderr says why: a
/// contender must never read a failure as "healthy".
pub fn status(client: &Client, path: &str, json: bool) -> u8 {
    match status_of(client, path, json) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fsobserver: lock-status unknown: {e:#}");
            5
        }
    }
}

fn status_of(client: &Client, path: &str, json: bool) -> anyhow::Result<u8> {
    let v = get_json(client, &[("path", path.to_string())])?;
    let code = v["exit_code"].as_u64().unwrap_or(5) as u8;
    if json {
        println!("{v}");
        return Ok(code);
    }
    let l = &v["lock"];
    let advice = match code {
        0 => "healthy: the holder refreshes it",
        3 => "heartbeat failing but the holder is ALIVE: do not steal",
        4 => "holder is dead: safe to take over",
        _ => "unknown to the observer",
    };
    let mut line = format!(
        "{}: {} — {advice}",
        Printable(path),
        Printable(v["state"].as_str().unwrap_or("unknown"))
    );
    if v["known"] == true {
        let now = crate::node::clock::now_unix_ns();
        let _ = write!(
            line,
            " (holder {}[{}], last ok {}",
            text(&l["holder"]["comm"]),
            l["holder"]["pid"],
            ago(now, &l["last_ok_unix_ns"])
        );
        if let Some(e) = l["last_failure"]["errno_name"].as_str() {
            let _ = write!(line, ", last error {}", Printable(e));
        }
        if let Some(t) = l["looks_stale_at_unix_ns"].as_u64() {
            let secs = (t as i128 - now as i128) as f64 / 1e9;
            let _ = write!(line, ", looks stale to contenders in {secs:.1} s");
        }
        let _ = write!(
            line,
            "; known by {}, confidence {})",
            text(&l["known_by"]),
            text(&l["confidence"])
        );
    } else if let Some(r) = v["reason"].as_str() {
        let _ = write!(line, " ({})", Printable(r));
    }
    println!("{line}");
    Ok(code)
}
