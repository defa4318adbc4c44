//! `GET /report`: what `observer report` writes, as data — a root-cause analysis of a filling
//! disk from the daemon's own counters: the victims (failing calls grouped by workload,
//! syscall, errno and path, from the flight recorder, beside the kernel's exact counts), each
//! filesystem's fill and time to full, the culprits (where entries accumulate and who creates
//! them, exact from the kernel), cleanup that never ran, orphans of dead processes (locks whose
//! holder died), deleted-but-open space, locks in trouble, and the fix (a purge dry run of the
//! configured policies, or suggested policies). Every number names the counter it comes from
//! (`sources`). Burst dumps carry the same object (a `"type":"report"` line), so a report can
//! be written after the fact.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::Api;

#[path = "report_orphans.rs"]
mod orphans;
use crate::{analyze::locks::LockState, events::kind::EventKind};

/// Version of the report object (`observer report` refuses others).
pub const REPORT_VERSION: u64 = 1;
/// Victim groups listed at most.
const VICTIMS_MAX: usize = 50;
/// Rows per growth list.
const ROWS_MAX: usize = 20;
/// Orphaned locks listed at most (all are counted).
const ORPHANS_MAX: usize = 200;

/// Failing calls of one kind by one workload on one path.
#[derive(Clone, Debug, Default, Serialize)]
struct Victim {
    workload: String,
    comm: String,
    syscall: String,
    errno: String,
    path: String,
    count: u64,
    first_unix_ns: u64,
    last_unix_ns: u64,
    pids: Vec<u32>,
}

/// Parameters of one report.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Only this filesystem (its mount point on the node).
    pub mount: Option<String>,
    /// Only what happened after this time (victims; counters are since the daemon started).
    pub since_unix_ns: Option<u64>,
    /// Purge dry runs of the configured policies, per name (run by the caller).
    pub purge: Option<Value>,
}

fn in_scope(scope: &Scope, mount: Option<&str>) -> bool {
    scope.mount.as_deref().is_none_or(|m| mount == Some(m))
}

/// The victims: the recorder's failing events grouped by (workload, comm, syscall, errno,
/// path), with counts, first and last times and the processes.
fn victims(api: &Api, scope: &Scope) -> (Vec<Victim>, u64) {
    let window = api.record.snapshot().contents;
    let mut groups: BTreeMap<[String; 5], Victim> = BTreeMap::new();
    let mut seen = 0;
    for e in window.events() {
        if e.kind != EventKind::Error || scope.since_unix_ns.is_some_and(|s| e.unix_ns < s) {
            continue;
        }
        let Some(key) = e.victim_key() else {
            continue;
        };
        let path = &key[4];
        if let Some(m) = scope.mount.as_deref()
            && !(path == m || path.starts_with(&format!("{}/", m.trim_end_matches('/'))))
        {
            continue;
        }
        seen += 1;
        let g = groups.entry(key.clone()).or_insert_with(|| Victim {
            workload: key[0].clone(),
            comm: key[1].clone(),
            syscall: key[2].clone(),
            errno: key[3].clone(),
            path: key[4].clone(),
            first_unix_ns: e.unix_ns,
            ..Default::default()
        });
        g.count += 1;
        g.first_unix_ns = g.first_unix_ns.min(e.unix_ns);
        g.last_unix_ns = g.last_unix_ns.max(e.unix_ns);
        if g.pids.len() < 16 && !g.pids.contains(&e.pid) {
            g.pids.push(e.pid);
        }
    }
    let mut out: Vec<Victim> = groups.into_values().collect();
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.first_unix_ns.cmp(&b.first_unix_ns))
    });
    out.truncate(VICTIMS_MAX);
    (out, seen)
}

/// Builds the report (reads every kernel map: call it off the async threads).
pub fn build(api: &Api, scope: &Scope) -> Value {
    let f = &api.config.file;
    let now = crate::node::clock::now_unix_ns();
    let stats = api.stats();
    let errors: Vec<_> = stats
        .errors
        .iter()
        .filter(|e| in_scope(scope, e.mount.as_deref()))
        .collect();
    let (filesystems, deleted_open, curves) = {
        let c = api.capacity();
        let curves: Vec<_> = c
            .curves()
            .into_iter()
            .filter(|r| in_scope(scope, Some(&r.mount)))
            .collect();
        let rows: Vec<_> = c
            .rows()
            .into_iter()
            .filter(|r| in_scope(scope, Some(&r.mount)))
            .collect();
        let d = &c.deleted_open;
        let deleted = json!({
            "by_mount": d.by_mount.iter().filter(|m| in_scope(scope, Some(&m.mount))).collect::<Vec<_>>(),
            "by_process": d.by_process,
            "truncated": d.truncated,
        });
        (rows, deleted, curves)
    };
    let (culprits, dirs, (procs, workloads), since, named, locks, unplaced, killed) = {
        let a = api.analysis();
        let g = &a.growth;
        let keep = |r: &crate::analyze::growth::GrowthRow| in_scope(scope, r.mount.as_deref());
        let locks: Vec<_> = a
            .locks
            .as_ref()
            .map(|t| t.locks().cloned().collect())
            .unwrap_or_default();
        (
            g.culprits(f.growth.culprit_share, f.growth.culprit_min_net as i64, now)
                .into_iter()
                .filter(keep)
                .collect::<Vec<_>>(),
            g.dirs(usize::MAX, now)
                .into_iter()
                .filter(keep)
                .take(ROWS_MAX)
                .collect::<Vec<_>>(),
            g.actors(ROWS_MAX),
            g.since_ns(),
            g.named,
            locks,
            g.unplaced.files + g.unplaced.dirs,
            g.killed.clone(),
        )
    };
    let (victims, victim_events) = victims(api, scope);
    let mounts = crate::node::mounts::MountTable::node();
    let lock_mount = |p: &str| mounts.mount_of(p).map(String::from);
    // An orphan is a lockfile still there whose holder died (a lock renamed into place or
    // removed too quickly for the guard to see it is not one).
    let exists =
        |p: &str| crate::node::fsio::symlink_metadata(&f.here(std::path::Path::new(p))).is_ok();
    let orphaned: Vec<_> = locks
        .iter()
        .filter(|l| l.state == LockState::HolderDead)
        .filter(|l| in_scope(scope, lock_mount(&l.path).as_deref()))
        .filter(|l| exists(&l.path))
        .collect();
    let troubled: Vec<_> = locks
        .iter()
        .filter(|l| {
            matches!(l.state, LockState::HeartbeatFailing | LockState::Stolen)
                || l.last_failure.is_some()
        })
        .filter(|l| in_scope(scope, lock_mount(&l.path).as_deref()))
        .take(ROWS_MAX)
        .collect();
    let (killed, dead_owner_files) = orphans::left_behind(f, &killed);
    let never_cleaned: Vec<_> = culprits.iter().filter(|c| c.never_cleaned).collect();
    let suggested: Vec<Value> = never_cleaned
        .iter()
        .map(|c| {
            json!({
                "name": format!("clean-{}", c.dir.rsplit('/').next().unwrap_or("dir")),
                "root": c.dir, "match": ["*"], "min_age_secs": 3600,
                "reason": format!("{} entries created, none ever removed", c.created + c.mkdirs),
            })
        })
        .collect();
    json!({
        "type": "report",
        "version": REPORT_VERSION,
        "generated_unix_ns": now,
        "node": api.info.node,
        "probe_mode": api.info.probe_mode,
        "scope": {"mount": scope.mount, "since_unix_ns": scope.since_unix_ns},
        "counting_since_unix_ns": since,
        "filesystems": filesystems,
        "fill_curves": curves,
        "errors": errors,
        "victims": victims,
        "victim_events": victim_events,
        "recorder_window": api.record.snapshot().window,
        "culprits": culprits,
        "directories": dirs,
        "creators": {"processes": procs, "workloads": workloads},
        "never_cleaned": never_cleaned,
        "removals_unplaced": unplaced,
        "orphans": {
            "killed_processes": killed,
            "pid_files_dead_owner": dead_owner_files,
            "locks_holder_dead": orphaned.len(),
            "locks": orphaned.iter().take(ORPHANS_MAX).collect::<Vec<_>>(),
        },
        "deleted_open": deleted_open,
        "locks_in_trouble": troubled,
        "fix": {
            "purge": scope.purge,
            "purge_enabled": f.purge.enabled,
            "suggested_policies": suggested,
        },
        "sources": {
            "errors": "kernel error counters per syscall, errno and filesystem (exact)",
            "victims": "flight recorder events (the last recorder.max_events)",
            "filesystems": "statvfs samples every capacity.sample_interval_ms, rate fitted over capacity.window_secs",
            "culprits": "kernel entry counters per directory (exact while the directory stays among the 16384 most recent), named by the kernel on first use",
            "creators": "kernel entry counters per process (exact; identity read while the process ran)",
            "never_cleaned": "no removal counted in the directory since counting began",
            "orphans": "kernel: processes killed by a signal (sched_process_exit) and their entries (created minus removed, exact); left behind: entries born while the process ran in the directories the kernel saw it create in and their parents (one listing each at report time, birth time from statx; likely, not proven theirs); workspaces: a directory and its siblings named after it; lock guard: lockfiles still there whose holder process is gone; pid files there naming a process that is gone",
            "bytes": "culprit directories measured by a bounded du every growth.bytes_interval_secs (allocated bytes; a lower bound when not complete); a workload's bytes: measured directories it was first to create entries in",
            "deleted_open": "a pass over /proc/*/fd every capacity.deleted_open_secs",
            "fix": "purge dry run of the configured policies at report time",
            "directories_named": named,
        },
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    mount: Option<String>,
    /// Only victims of the last N seconds.
    since_secs: Option<u64>,
    /// Run the purge policies as a dry run for the fix section (default: when purge is on).
    purge: Option<bool>,
}

/// `GET /report?mount=M&since_secs=N&purge=false`.
pub async fn handler(
    axum::extract::State(api): axum::extract::State<std::sync::Arc<Api>>,
    caller: Option<axum::Extension<super::auth::Caller>>,
    q: Result<axum::extract::Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> axum::response::Response {
    use axum::{http::StatusCode, response::IntoResponse as _};
    let Ok(axum::extract::Query(q)) = q else {
        return (
            StatusCode::BAD_REQUEST,
            "query: mount=PATH, since_secs=N and purge=true|false are accepted\n",
        )
            .into_response();
    };
    let purge = if q.purge.unwrap_or(api.config.file.purge.enabled)
        && let Some(purger) = api.purge.get()
        && let Some(axum::Extension(caller)) = caller
    {
        let req = crate::act::purge::Request {
            policy: None,
            execute: false,
            trigger: "report".into(),
            requested_by: caller.0,
        };
        match purger.request(req) {
            Ok(rx) => match rx.await {
                Ok(runs) => Some(json!({ "runs": runs })),
                Err(_) => Some(json!({ "error": "the purge thread stopped" })),
            },
            Err(e) => Some(json!({ "error": e.to_string() })),
        }
    } else {
        None
    };
    let scope = Scope {
        mount: q.mount,
        since_unix_ns: q.since_secs.map(|s| {
            crate::node::clock::now_unix_ns().saturating_sub(s.saturating_mul(1_000_000_000))
        }),
        purge,
    };
    // Reads every kernel map and renders the recorder's failing events: off the async threads.
    match tokio::task::spawn_blocking(move || build(&api, &scope)).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "report failed\n").into_response(),
    }
}
