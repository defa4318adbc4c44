//! The report as Markdown: for a terminal and an incident ticket. Every name is printed through
//! `printable` and `cell`, so no file name can break a table or the terminal.

use std::fmt::Write as _;

use serde_json::Value;

use super::{actors, bytes, cell, dir_bytes, duration, n, s, time, tldr, used_percent};
use crate::node::text::printable;

pub(super) fn page(v: &Value) -> String {
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, "# Filesystem report — {}\n", s(&v["node"]));
    let _ = writeln!(
        w,
        "Generated {} ({} probes); counting since {}; scope: {}.\n",
        time(&v["generated_unix_ns"]),
        s(&v["probe_mode"]),
        time(&v["counting_since_unix_ns"]),
        v["scope"]["mount"]
            .as_str()
            .map_or("every filesystem".into(), printable),
    );
    let _ = writeln!(w, "## TL;DR\n");
    for l in tldr(v) {
        let _ = writeln!(w, "- {l}");
    }
    let _ = writeln!(w, "\n## Victims\n");
    let _ = writeln!(
        w,
        "| workload | process | call | errno | path | count | first | last | pids |"
    );
    let _ = writeln!(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for x in v["victims"].as_array().into_iter().flatten() {
        let pids: Vec<String> = x["pids"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| n(p).to_string())
            .collect();
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&s(&x["workload"])),
            cell(&s(&x["comm"])),
            s(&x["syscall"]),
            s(&x["errno"]),
            cell(&s(&x["path"])),
            n(&x["count"]),
            time(&x["first_unix_ns"]),
            time(&x["last_unix_ns"]),
            pids.join(" "),
        );
    }
    let _ = writeln!(w, "\nExact failure counts (kernel):\n");
    for e in v["errors"].as_array().into_iter().flatten() {
        let _ = writeln!(
            w,
            "- {} {} on {}: {}",
            s(&e["syscall"]),
            s(&e["errno_name"]),
            cell(&e["mount"].as_str().map_or_else(|| s(&e["dev"]), printable)),
            n(&e["count"])
        );
    }
    let _ = writeln!(w, "\n## Filesystems\n");
    let _ = writeln!(
        w,
        "| mount | size | used | free | free inodes | filling /min | full in |"
    );
    let _ = writeln!(w, "| --- | --- | --- | --- | --- | --- | --- |");
    for f in v["filesystems"].as_array().into_iter().flatten() {
        let _ = writeln!(
            w,
            "| {} | {} | {:.1}% | {} | {} | {} | {} |",
            cell(&s(&f["mount"])),
            bytes(n(&f["size_bytes"])),
            used_percent(f),
            bytes(n(&f["free_bytes"])),
            n(&f["free_inodes"]),
            bytes((f["bytes_per_sec"].as_f64().unwrap_or(0.0).max(0.0) * 60.0) as u64),
            duration(f["bytes_full_in_secs"].as_f64()),
        );
    }
    let _ = writeln!(w, "\n## Culprits: where entries accumulate\n");
    growth_table(w, &v["culprits"]);
    let _ = writeln!(w, "\n## Cleanup that never ran\n");
    let never = v["never_cleaned"].as_array().map_or(0, Vec::len);
    if never == 0 {
        let _ = writeln!(w, "Every growing directory had removals.");
    }
    let unplaced = n(&v["removals_unplaced"]);
    if unplaced > 0 {
        let _ = writeln!(
            w,
            "Note: {unplaced} removals were named by absolute path and could not be placed in a \
             directory (tracepoint mode); a directory below may have been cleaned by them.\n"
        );
    }
    for c in v["never_cleaned"].as_array().into_iter().flatten() {
        let _ = writeln!(
            w,
            "- {}: {} entries created since counting began, 0 removed.",
            cell(&s(&c["dir"])),
            n(&c["created"]) + n(&c["mkdirs"])
        );
    }
    let _ = writeln!(w, "\n## Creators\n");
    let _ = writeln!(
        w,
        "| workload | process | created | directories | removed |"
    );
    let _ = writeln!(w, "| --- | --- | --- | --- | --- |");
    for p in v["creators"]["processes"].as_array().into_iter().flatten() {
        let _ = writeln!(
            w,
            "| {} | {} ({}) | {} | {} | {} |",
            cell(&s(&p["workload"])),
            cell(&s(&p["comm"])),
            n(&p["pid"]),
            n(&p["created"]),
            n(&p["mkdirs"]),
            n(&p["removed"])
        );
    }
    let _ = writeln!(
        w,
        "\n| workload | created | directories | removed | bytes (measured directories it created in) |"
    );
    let _ = writeln!(w, "| --- | --- | --- | --- | --- |");
    for p in v["creators"]["workloads"].as_array().into_iter().flatten() {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            cell(&s(&p["workload"])),
            n(&p["created"]),
            n(&p["mkdirs"]),
            n(&p["removed"]),
            p["bytes"].as_u64().map_or_else(|| "-".into(), bytes),
        );
    }
    let _ = writeln!(w, "\n## Orphans of dead processes\n");
    for k in v["orphans"]["killed_processes"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let dirs: Vec<String> = k["first_in"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| cell(&s(d)))
            .collect();
        let _ = writeln!(
            w,
            "- {} `{}` ({}) killed by signal {}: left {} entries{}",
            n(&k["pid"]),
            cell(&s(&k["comm"])),
            cell(&s(&k["workload"])),
            n(&k["signal"]),
            k["entries_left"].as_i64().unwrap_or(0),
            if dirs.is_empty() {
                String::new()
            } else {
                format!(" (first created in: {})", dirs.join(", "))
            },
        );
        let left = &k["left"];
        if n(&left["entries"]) > 0 {
            let shown: Vec<String> = left["shown"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| cell(&s(p)))
                .collect();
            let _ = writeln!(
                w,
                "  - made while it ran, still there: {} entries, {}{}: {}",
                n(&left["entries"]),
                bytes(n(&left["bytes"])),
                if left["truncated"].as_bool() == Some(true) {
                    " (listing cut short)"
                } else {
                    ""
                },
                shown.join(", ")
            );
        }
        for ws in left["workspaces"].as_array().into_iter().flatten() {
            let members: Vec<String> = ws["members"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| cell(&s(m)))
                .collect();
            let _ = writeln!(
                w,
                "  - workspace {}/{}: {}",
                cell(&s(&ws["dir"])),
                cell(&s(&ws["stem"])),
                members.join(", ")
            );
        }
    }
    for p in v["orphans"]["pid_files_dead_owner"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            w,
            "- pid file {} names process {}, which is gone",
            cell(&s(&p["path"])),
            n(&p["pid"])
        );
    }
    let _ = writeln!(
        w,
        "{} lock files whose holder has died.\n",
        n(&v["orphans"]["locks_holder_dead"])
    );
    for l in v["orphans"]["locks"].as_array().into_iter().flatten() {
        let h = &l["holder"];
        let _ = writeln!(
            w,
            "- {} — holder {} `{}` ({}), dead since {}",
            cell(&s(&l["path"])),
            n(&h["pid"]),
            cell(&s(&h["comm"])),
            cell(&s(&h["workload"])),
            time(&l["state_since_unix_ns"]),
        );
    }
    let _ = writeln!(w, "\n## Deleted but open\n");
    for p in v["deleted_open"]["by_process"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            w,
            "- {} `{}` holds {} deleted files, {}",
            n(&p["pid"]),
            cell(&s(&p["comm"])),
            n(&p["files"]),
            bytes(n(&p["bytes"]))
        );
    }
    let _ = writeln!(w, "\n## Locks in trouble\n");
    for l in v["locks_in_trouble"].as_array().into_iter().flatten() {
        let _ = writeln!(
            w,
            "- {}: {} (last failure {})",
            cell(&s(&l["path"])),
            s(&l["state"]),
            l["last_failure"]["errno"]
                .as_str()
                .map_or("-".into(), printable)
        );
    }
    let _ = writeln!(w, "\n## Fix\n");
    let runs = v["fix"]["purge"]["runs"].as_array();
    for r in runs.into_iter().flatten() {
        let _ = writeln!(
            w,
            "- Policy `{}` (root {}): would remove {} entries, {}; skipped {}. Run: `observer purge --policy {} --execute`",
            s(&r["policy"]),
            cell(&s(&r["root"])),
            n(&r["would_delete"]),
            bytes(n(&r["bytes"])),
            n(&r["skipped"]),
            s(&r["policy"]),
        );
    }
    if let Some(e) = v["fix"]["purge"]["error"].as_str() {
        let _ = writeln!(w, "- The purge dry run did not run: {}", printable(e));
    }
    let suggested = v["fix"]["suggested_policies"].as_array();
    if runs.is_none() && suggested.is_some_and(|s| !s.is_empty()) {
        let _ = writeln!(
            w,
            "\nSuggested purge policies (add to `[[purge.policies]]`, then dry-run):\n\n```toml"
        );
        for p in suggested.into_iter().flatten() {
            let _ = writeln!(
                w,
                "[[purge.policies]]\nname = {}\nroot = {}\nmatch = [\"*\"]\nmin_age_secs = {}\n# {}\n",
                toml_str(&s(&p["name"])),
                toml_str(&s(&p["root"])),
                n(&p["min_age_secs"]),
                s(&p["reason"]),
            );
        }
        let _ = writeln!(w, "```");
    }
    let _ = writeln!(w, "\n## Sources\n");
    for (k, src) in v["sources"].as_object().into_iter().flatten() {
        let _ = writeln!(
            w,
            "- {k}: {}",
            src.as_str().map_or_else(|| src.to_string(), printable)
        );
    }
    o
}

fn toml_str(t: &str) -> String {
    serde_json::to_string(t).unwrap_or_default()
}

fn growth_table(w: &mut String, rows: &Value) {
    let _ = writeln!(
        w,
        "| directory | net entries | created | directories | removed | net /min | bytes | creators | last removal |"
    );
    let _ = writeln!(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for c in rows.as_array().into_iter().flatten() {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {:.1} | {} | {} | {} |",
            cell(&s(&c["dir"])),
            c["net"].as_i64().unwrap_or(0),
            n(&c["created"]),
            n(&c["mkdirs"]),
            n(&c["removed"]),
            c["net_per_min"].as_f64().unwrap_or(0.0),
            dir_bytes(c),
            cell(&actors(c)),
            if c["never_cleaned"].as_bool() == Some(true) {
                "never".into()
            } else {
                time(&c["last_removal_unix_ns"])
            },
        );
    }
}
