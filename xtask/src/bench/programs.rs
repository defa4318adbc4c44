//! Where the added time goes, from the kernel's own accounting (`kernel.bpf_stats_enabled`):
//! per program (the observer's, during its workloads and a storm), and per operation of each
//! micro workload, the observer's programs against the peer's (bpftrace) on the same
//! tracepoints. Wall-clock ratios of a 2.5 µs syscall cannot resolve a 50 ns difference through
//! the machine's noise (5-15 % between runs); the programs' own run time can.

use std::{collections::HashMap, fs, path::Path};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{
    harness::{Observer, Scratch, median},
    peer, run, workloads,
};

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled` on for as long as it lives; the previous value put back on drop.
struct StatsOn {
    previous: String,
}

impl StatsOn {
    fn enable() -> anyhow::Result<StatsOn> {
        let previous = fs::read_to_string(STATS)
            .map(|t| t.trim().to_string())
            .unwrap_or_else(|_| "0".into());
        fs::write(STATS, "1").context("enable kernel.bpf_stats_enabled")?;
        Ok(StatsOn { previous })
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        let _: Result<_, _> = fs::write(STATS, &self.previous);
    }
}

/// Run count and run time (ns) of every program process `pid` holds, by program id.
fn stats_of(pid: u32) -> anyhow::Result<HashMap<u32, (u64, u64)>> {
    let mut out = HashMap::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fdinfo"))?.filter_map(Result::ok) {
        let text = fs::read_to_string(entry.path()).unwrap_or_default();
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(ns), Some(cnt)) =
            (get("prog_id:"), get("run_time_ns:"), get("run_cnt:"))
        {
            out.insert(id as u32, (cnt, ns));
        }
    }
    Ok(out)
}

/// Names of the loaded programs, by id (the kernel keeps 15 bytes of a name).
fn program_names() -> HashMap<u32, String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_string()))
        .collect()
}

/// The syscalls a micro workload times (its other calls, e.g. creating the files an unlink
/// benchmark removes, are left out): the first is the operation counted.
fn timed_calls(workload: &str) -> &'static [&'static str] {
    match workload {
        w if w.starts_with("pwrite") => &["pwrite64"],
        w if w.starts_with("openat+close") => &["openat", "close"],
        w if w.starts_with("utimensat") => &["utimensat"],
        w if w.starts_with("unlink") || w.starts_with("rm -rf") => &["unlinkat"],
        _ => &[],
    }
}

/// Whether program `name` (the observer's `fso_<call>`, bpftrace's `sys_exit_<call>`, both cut
/// to the kernel's 15 bytes) runs on `call`'s exit.
fn runs_on(name: &str, call: &str) -> bool {
    [format!("fso_{call}"), format!("sys_exit_{call}")]
        .iter()
        .any(|full| full == name || (name.len() == 15 && full.starts_with(name)))
}

/// BPF time per operation between two snapshots: the added run time of the programs on the
/// workload's calls over the added runs of the programs on its first call.
fn per_op(
    names: &HashMap<u32, String>,
    calls: &[&str],
    before: &HashMap<u32, (u64, u64)>,
    after: &HashMap<u32, (u64, u64)>,
) -> Option<f64> {
    let (mut ns, mut ops) = (0u64, 0u64);
    for (id, (cnt, t)) in after {
        let name = names.get(id).map_or("", String::as_str);
        let Some(i) = calls.iter().position(|c| runs_on(name, c)) else {
            continue;
        };
        let (c0, t0) = before.get(id).copied().unwrap_or((0, 0));
        ns += t.saturating_sub(t0);
        if i == 0 {
            ops += cnt.saturating_sub(c0);
        }
    }
    (ops > 0).then(|| ns as f64 / ops as f64)
}

/// Each micro workload once under `pid`'s programs: BPF ns per operation (None: no program).
fn round(pid: u32, helper: &Path, s: &Scratch) -> anyhow::Result<Vec<Option<f64>>> {
    let names = program_names();
    let mut v = Vec::new();
    for w in workloads() {
        let before = stats_of(pid)?;
        (w.run)(helper, s)?;
        v.push(per_op(
            &names,
            timed_calls(&w.name),
            &before,
            &stats_of(pid)?,
        ));
    }
    Ok(v)
}

/// The micro workloads, the peer (bpftrace) and the observer in alternation for `rounds`
/// rounds: the medians of their programs' run time per operation, side by side.
pub fn per_operation(
    observer: &Path,
    helper: &Path,
    s: &Scratch,
    out_dir: &Path,
    rounds: usize,
) -> anyhow::Result<Value> {
    peer::ensure()?;
    let _on = StatsOn::enable()?;
    let names: Vec<String> = workloads().into_iter().map(|w| w.name).collect();
    let n = names.len();
    let (mut obs, mut bt) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    for _ in 0..rounds.max(1) {
        let p = peer::Peer::start()?;
        for (i, ns) in round(p.pid(), helper, s)?.into_iter().enumerate() {
            bt[i].extend(ns);
        }
        drop(p);
        let o = Observer::start(observer, out_dir)?;
        for (i, ns) in round(o.pid(), helper, s)?.into_iter().enumerate() {
            obs[i].extend(ns);
        }
        o.stop()?;
    }
    println!("| workload | observer: BPF ns per operation | bpftrace | observer / bpftrace |");
    println!("| --- | --- | --- | --- |");
    let mut rows = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (o, b) = (median(&mut obs[i]), median(&mut bt[i]));
        let ratio = (b > 0.0).then(|| o / b);
        let show = |v: f64| {
            if v > 0.0 {
                format!("{v:.1}")
            } else {
                "no program".into()
            }
        };
        println!(
            "| {name} | {} | {} | {} |",
            show(o),
            show(b),
            ratio.map_or("n/a".into(), |r| format!("{r:.2}"))
        );
        rows.push(json!({"workload": name, "observer_ns": o, "peer_ns": b, "ratio": ratio}));
    }
    println!(
        "(kernel.bpf_stats_enabled: the run time of each tool's programs on the calls the \
         workload times, over the operations: the time the programs themselves take, without \
         the tracepoint dispatch both pay; stats add ~20 ns to every run of either)"
    );
    Ok(Value::Array(rows))
}

/// `--only programs`: the per-operation comparison alone.
pub fn programs_only(
    root: &Path,
    tools: &crate::cargo::Tools,
    observer: &Path,
    rounds: usize,
) -> anyhow::Result<Value> {
    let helper = super::build_helper(root, tools)?;
    let scratch = Scratch::new()?;
    let rows = per_operation(observer, &helper, &scratch, &std::env::temp_dir(), rounds)?;
    Ok(json!({"header": super::header(root, rounds)?, "program_time": rows}))
}

/// Per-program ns per call of the observer's programs over the first micro workloads and an
/// ENOSPC storm.
pub fn bpf_stats(
    observer: &Path,
    helper: &Path,
    s: &Scratch,
    out_dir: &Path,
) -> anyhow::Result<Value> {
    let _on = StatsOn::enable()?;
    let obs = Observer::start(observer, out_dir)?;
    for w in workloads().iter().take(5) {
        (w.run)(helper, s)?;
    }
    run(std::process::Command::new(helper).args(["storm", &s.path("full/filler"), "100000"]))?;
    let names = program_names();
    let mut rows: Vec<(String, u64, f64)> = stats_of(obs.pid())?
        .into_iter()
        .filter(|(_, (cnt, _))| *cnt > 0)
        .map(|(id, (cnt, ns))| {
            (
                names.get(&id).cloned().unwrap_or_default(),
                cnt,
                ns as f64 / cnt as f64,
            )
        })
        .collect();
    obs.stop()?;
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    println!("| program | calls | ns/call |");
    println!("| --- | --- | --- |");
    for (name, cnt, ns) in &rows {
        println!("| {name} | {cnt} | {ns:.1} |");
    }
    Ok(rows
        .iter()
        .map(|(n, c, ns)| json!({"program": n, "calls": c, "ns_per_call": ns}))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_operation_is_the_timed_calls_programs_time_over_the_first_calls_runs() {
        let names = HashMap::from([
            (1, "fso_openat".to_string()),
            (2, "fso_close".to_string()),
            (3, "fso_unlinkat".to_string()),
            (4, "sys_exit_unlink".to_string()), // bpftrace's unlinkat, cut to 15 bytes
        ]);
        let before = HashMap::from([(1, (10, 1_000)), (2, (5, 500)), (3, (0, 0))]);
        // 100 opens (10,000 ns) and closes (3,000 ns); 50 unlinks, untimed by this workload.
        let after = HashMap::from([
            (1, (110, 11_000)),
            (2, (105, 3_500)),
            (3, (50, 9_000)),
            (4, (7, 700)),
        ]);
        let calls = timed_calls("openat+close (create)");
        assert_eq!(per_op(&names, calls, &before, &after), Some(130.0));
        let unlink = timed_calls("unlink");
        assert_eq!(
            per_op(&names, unlink, &before, &after),
            Some((9_000.0 + 700.0) / 57.0)
        );
        assert_eq!(per_op(&names, calls, &after, &after), None, "no run");
        assert_eq!(
            per_op(
                &names,
                timed_calls("getppid (not watched)"),
                &before,
                &after
            ),
            None
        );
        assert!(runs_on("sys_exit_unlink", "unlinkat") && !runs_on("fso_unlink", "unlinkat"));
    }
}
