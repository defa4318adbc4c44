//! `observer purge [--policy P] [--dry-run|--execute] [--json]`: asks the daemon for a run and
//! prints every decision (what goes or would go, what is kept and why).

use std::fmt::Write as _;

use serde_json::Value;

use super::{Client, top::text};
use crate::node::text::Printable;

/// Runs a purge on the daemon; dry run unless `execute`.
pub fn run(client: &Client, policy: Option<&str>, execute: bool, json: bool) -> anyhow::Result<()> {
    let mut query = vec![("execute", execute.to_string())];
    if let Some(p) = policy {
        query.push(("policy", p.to_string()));
    }
    let mut text = String::new();
    text.push_str(&client.post_text("/purge", &query)?);
    if json {
        println!("{text}");
        return Ok(());
    }
    let v: Value = serde_json::from_str(&text)?;
    print!("{}", render(&v));
    Ok(())
}

fn size(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1}G", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1}M", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1}K", b as f64 / 1024.0),
        b => format!("{b}B"),
    }
}

/// The runs as a table per run plus a summary line.
fn render(v: &Value) -> String {
    let mut out = String::new();
    for r in v["runs"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "policy {} ({}, trigger {}) root {}",
            text(&r["policy"]),
            text(&r["mode"]),
            text(&r["trigger"]),
            text(&r["root"]),
        );
        if let Some(e) = r["error"].as_str() {
            let _ = writeln!(out, "  error: {}", Printable(e));
        }
        let _ = writeln!(
            out,
            "  {:<13} {:<20} {:>8} {:>9}  PATH — REASON",
            "ACTION", "KEPT BECAUSE", "SIZE", "AGE"
        );
        for it in r["items"].as_array().into_iter().flatten() {
            let age = it["age_secs"]
                .as_u64()
                .map(|s| humantime::format_duration(std::time::Duration::from_secs(s)).to_string())
                .map(|s| s.split(' ').next().unwrap_or("").to_string())
                .unwrap_or_else(|| "-".into());
            let group = it["group"]
                .as_array()
                .filter(|g| !g.is_empty())
                .map(|g| {
                    let names: Vec<_> = g.iter().filter_map(|n| n.as_str()).collect();
                    format!(" (+ {})", Printable(&names.join(", ")))
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<13} {:<20} {:>8} {:>9}  {}{group} — {}",
                text(&it["action"]),
                Printable(it["skip"].as_str().unwrap_or("-")),
                size(it["bytes"].as_u64().unwrap_or(0)),
                age,
                text(&it["path"]),
                Printable(it["reason"].as_str().unwrap_or("")),
            );
        }
        let verb = if r["mode"] == "execute" {
            "deleted"
        } else {
            "would delete"
        };
        let n = r["deleted"].as_u64().unwrap_or(0) + r["would_delete"].as_u64().unwrap_or(0);
        let _ = writeln!(
            out,
            "  {verb} {n} entries ({}), kept {}",
            size(r["bytes"].as_u64().unwrap_or(0)),
            r["skipped"].as_u64().unwrap_or(0)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_run_renders_every_decision() {
        let v = serde_json::json!({"runs": [{
        "policy": "wt", "mode": "dry-run", "trigger": "manual", "root": "/r",
        "deleted": 0, "would_delete": 1, "skipped": 1, "bytes": 8192,
        "items": [
            {"action": "would-delete", "bytes": 8192, "age_secs": 90000, "path": "/r/w/a",
             "group": ["a.cred.sh"], "reason": "matched"},
            {"action": "skipped", "skip": "open-files", "bytes": 0, "path": "/r/w/b",
             "group": [], "reason": "f is open"}
        ]}]});
        let s = super::render(&v);
        assert!(
            s.contains("would-delete") && s.contains("/r/w/a (+ a.cred.sh)"),
            "{s}"
        );
        assert!(s.contains("open-files") && s.contains("f is open"), "{s}");
        assert!(s.contains("would delete 1 entries (8.0K), kept 1"), "{s}");
    }
}
