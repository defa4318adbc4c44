//! `observer report`: the daemon's `/report` object (or the one a dump carries) written as a
//! root-cause analysis — Markdown (default), JSON, or one self-contained HTML page with the
//! fill curve and growth-by-directory charts (inline SVG: no script, no network).

use std::{io::BufRead as _, time::Duration};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::Client;
use crate::node::text::printable;

/// What `observer report` was asked for (the command line's `ReportArgs`, without the daemon's
/// address: the client is made only when the report comes from the daemon).
#[derive(Debug, Default)]
pub struct Request {
    pub from_dump: Option<std::path::PathBuf>,
    pub mount: Option<String>,
    pub since: Option<Duration>,
    pub format: String,
    pub output: Option<std::path::PathBuf>,
    pub no_purge: bool,
}

mod html;
mod markdown;

/// The report object the daemon made (`"type":"report"`), live or from a dump.
fn fetch(a: &Request, client: impl FnOnce() -> anyhow::Result<Client>) -> anyhow::Result<Value> {
    let v = match &a.from_dump {
        Some(file) => {
            let f = std::fs::File::open(file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let mut found = None;
            for line in std::io::BufReader::new(f).lines() {
                let line = line.with_context(|| format!("cannot read {}", file.display()))?;
                // The report is the dump's last line; cheap test first, then its type field.
                if line.contains(r#""type":"report""#)
                    && let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["type"] == "report"
                {
                    found = Some(v);
                }
            }
            let mut v = found.with_context(|| {
                format!(
                    "{} carries no report data (a dump from an observer without reports)",
                    file.display()
                )
            })?;
            if let Some(m) = &a.mount {
                keep_mount(&mut v, m);
            }
            v
        }
        None => {
            let mut c = client()?;
            // A purge dry run walks its roots: give it time.
            c.timeout = c.timeout.max(Duration::from_secs(600));
            let mut q = Vec::new();
            if let Some(m) = &a.mount {
                q.push(("mount", m.clone()));
            }
            if let Some(s) = a.since {
                q.push(("since_secs", s.as_secs().to_string()));
            }
            if a.no_purge {
                q.push(("purge", "false".to_string()));
            }
            serde_json::from_str(&c.get_text("/report", &q)?)?
        }
    };
    match v["version"].as_u64() {
        Some(crate::serve::report::REPORT_VERSION) => Ok(v),
        other => bail!("report version {other:?} is not one this observer writes"),
    }
}

/// Keeps only rows of filesystem `m` (a dump's report covers every filesystem).
fn keep_mount(v: &mut Value, m: &str) {
    for key in [
        "filesystems",
        "errors",
        "culprits",
        "directories",
        "never_cleaned",
    ] {
        if let Some(a) = v[key].as_array_mut() {
            a.retain(|r| r["mount"].as_str() == Some(m));
        }
    }
    let prefix = format!("{}/", m.trim_end_matches('/'));
    if let Some(a) = v["victims"].as_array_mut() {
        a.retain(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p == m || p.starts_with(&prefix))
        });
    }
}

pub fn run(a: &Request, client: impl FnOnce() -> anyhow::Result<Client>) -> anyhow::Result<()> {
    let v = fetch(a, client)?;
    let out = match a.format.as_str() {
        "md" | "markdown" => markdown::page(&v),
        "json" => serde_json::to_string_pretty(&v)? + "\n",
        "html" => html::page(&v),
        other => bail!("--format {other:?}: md, json or html"),
    };
    match &a.output {
        Some(p) => std::fs::write(p, out).with_context(|| format!("cannot write {}", p.display())),
        None => {
            print!("{out}");
            Ok(())
        }
    }
}

pub(crate) fn s(v: &Value) -> String {
    printable(v.as_str().unwrap_or("-"))
}

pub(crate) fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

pub(crate) fn bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = b as f64;
    let mut i = 0;
    while x >= 1024.0 && i < U.len() - 1 {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{x:.1} {}", U[i])
    }
}

pub(crate) fn time(v: &Value) -> String {
    v.as_u64()
        .map_or("-".into(), crate::node::clock::rfc3339_micros)
}

pub(crate) fn duration(secs: Option<f64>) -> String {
    secs.map_or("-".into(), |x| {
        humantime::format_duration(Duration::from_secs(x.max(0.0) as u64)).to_string()
    })
}

/// Markdown cells: `|` and newlines cannot break the table, whatever a file is named.
pub(crate) fn cell(t: &str) -> String {
    t.replace('|', "\\|").replace(['\n', '\r'], " ")
}

pub(crate) fn used_percent(f: &Value) -> f64 {
    let size = n(&f["size_bytes"]);
    if size == 0 {
        return 0.0;
    }
    100.0 * (size - n(&f["free_bytes"]).min(size)) as f64 / size as f64
}

pub(crate) fn actors(r: &Value) -> String {
    r["creators"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| format!("{} ({})", s(&c["comm"]), s(&c["workload"])))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// A measured directory's bytes: "1.2 GiB (+300.0 MiB)", "≥" when the walk was cut short;
/// "-" when it was not measured.
pub(crate) fn dir_bytes(c: &Value) -> String {
    let b = &c["bytes"];
    if !b.is_object() {
        return "-".into();
    }
    let added = b["added"].as_i64().unwrap_or(0);
    format!(
        "{}{}{}",
        if b["complete"].as_bool() == Some(true) {
            ""
        } else {
            ">= "
        },
        bytes(n(&b["bytes"])),
        if added > 0 {
            format!(" (+{})", bytes(added as u64))
        } else {
            String::new()
        }
    )
}

/// The TL;DR lines: the state of each filling filesystem, the victims, the culprits, the
/// orphans, deleted-but-open space and the fix.
pub(crate) fn tldr(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for f in v["filesystems"].as_array().into_iter().flatten() {
        let used = used_percent(f);
        let filling = f["bytes_per_sec"].as_f64().unwrap_or(0.0) > 0.0;
        if used >= 90.0 || filling && f["bytes_full_in_secs"].is_number() {
            out.push(format!(
                "{} is {used:.0}% full ({} free of {}); {}.",
                s(&f["mount"]),
                bytes(n(&f["free_bytes"])),
                bytes(n(&f["size_bytes"])),
                if filling {
                    format!(
                        "filling at {}/min, full in {}",
                        bytes((f["bytes_per_sec"].as_f64().unwrap_or(0.0) * 60.0) as u64),
                        duration(f["bytes_full_in_secs"].as_f64())
                    )
                } else {
                    "not filling now".into()
                }
            ));
        }
    }
    let failed: u64 = v["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| matches!(e["errno_name"].as_str(), Some("ENOSPC" | "EDQUOT")))
        .map(|e| n(&e["count"]))
        .sum();
    if let Some(top) = v["victims"].as_array().and_then(|a| a.first()) {
        out.push(format!(
            "{failed} calls failed with ENOSPC or EDQUOT (kernel count); most: {} `{}` {} {} on {} x{} ({} .. {}).",
            s(&top["workload"]),
            s(&top["comm"]),
            s(&top["syscall"]),
            s(&top["errno"]),
            s(&top["path"]),
            n(&top["count"]),
            time(&top["first_unix_ns"]),
            time(&top["last_unix_ns"]),
        ));
    }
    for c in v["culprits"].as_array().into_iter().flatten().take(3) {
        out.push(format!(
            "{} grew by {} entries ({} files, {} directories){}{} — created by {}.",
            s(&c["dir"]),
            c["net"].as_i64().unwrap_or(0),
            n(&c["created"]),
            n(&c["mkdirs"]),
            if c["bytes"].is_object() {
                format!(", holds {}", dir_bytes(c))
            } else {
                String::new()
            },
            if c["never_cleaned"].as_bool() == Some(true) {
                ", never cleaned"
            } else {
                ""
            },
            actors(c),
        ));
    }
    let orphans = n(&v["orphans"]["locks_holder_dead"]);
    if orphans > 0 {
        out.push(format!(
            "{orphans} lock files are held by processes that have died."
        ));
    }
    let killed = v["orphans"]["killed_processes"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if !killed.is_empty() {
        let left: i64 = killed
            .iter()
            .map(|k| k["entries_left"].as_i64().unwrap_or(0))
            .sum();
        let spaces: usize = killed
            .iter()
            .map(|k| k["left"]["workspaces"].as_array().map_or(0, Vec::len))
            .sum();
        out.push(format!(
            "{} processes killed by a signal left {left} entries behind{}.",
            killed.len(),
            if spaces > 0 {
                format!(", among them {spaces} workspaces (a directory and its named siblings)")
            } else {
                String::new()
            }
        ));
    }
    let dead_pid_files = v["orphans"]["pid_files_dead_owner"]
        .as_array()
        .map_or(0, Vec::len);
    if dead_pid_files > 0 {
        out.push(format!(
            "{dead_pid_files} pid files name a process that is gone."
        ));
    }
    let held: u64 = v["deleted_open"]["by_mount"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| n(&m["bytes"]))
        .sum();
    if held > 0 {
        out.push(format!("{} held by deleted-but-open files.", bytes(held)));
    }
    for r in v["fix"]["purge"]["runs"].as_array().into_iter().flatten() {
        out.push(format!(
            "Fix: purge policy `{}` would remove {} entries ({}): `observer purge --policy {} --execute`.",
            s(&r["policy"]),
            n(&r["would_delete"]),
            bytes(n(&r["bytes"])),
            s(&r["policy"]),
        ));
    }
    if out.is_empty() {
        out.push("Nothing is filling and nothing failed.".into());
    }
    out
}
