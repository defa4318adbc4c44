//! `cargo xtask bench`: each workload (micro-benchmarks and real tools: tar, cp -a, rm -rf, git)
//! without the observer, with the kernel floor, with the peer (a bpftrace script, `peer.bt`) and
//! with the full observer attached, in alternation for several rounds; medians and ratios, an
//! ENOSPC storm (events/s delivered,
//! losses, daemon CPU and RSS), daemon CPU at a steady 10k failures/s, and in-kernel run time
//! from BPF stats: per program, and per operation against the peer's programs (`programs.rs`).
//! A benchmark, not a test: it asserts nothing and never runs in CI.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

mod compare;
mod harness;
mod locks;
mod peer;
mod programs;
mod prototype;
mod purge;
mod real;
mod storm;

pub use compare::compare;
pub use locks::lock_latency;
pub use programs::programs_only;
pub use purge::purge_cost;

use crate::{cargo, cargo::Tools, toolchain::output as run};
use harness::{Observer, Scratch, cpu_seconds, field, healthz_latencies, median};

/// The kernel's own cost of syscall tracepoints: while held, the ftrace event of a syscall no
/// workload makes (`vhangup`) is enabled, which puts every task on the syscall slow path just
/// as the observer's `sys_exit` programs do, but runs no program.
struct FloorTracepoint {
    enable: PathBuf,
}

impl FloorTracepoint {
    fn enable() -> Option<FloorTracepoint> {
        let enable = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .iter()
            .map(|t| Path::new(t).join("events/syscalls/sys_exit_vhangup/enable"))
            .find(|p| p.exists())?;
        fs::write(&enable, "1").ok()?;
        Some(FloorTracepoint { enable })
    }
}

impl Drop for FloorTracepoint {
    fn drop(&mut self) {
        let _: Result<_, _> = fs::write(&self.enable, "0");
    }
}

/// A tmpfs for the workloads and a full one for the storms; unmounted on drop.
/// Runs a workload once (helper binary, scratch space) and returns ns per operation.
type RunFn = Box<dyn Fn(&Path, &Scratch) -> anyhow::Result<f64>>;

struct Workload {
    name: String,
    run: RunFn,
}

fn workloads() -> Vec<Workload> {
    let helper = |args: Vec<String>| -> RunFn {
        Box::new(move |w: &Path, s: &Scratch| {
            let args: Vec<String> = args.iter().map(|a| a.replace("{S}", &s.path(""))).collect();
            if let Some(dir) = args
                .get(1)
                .filter(|_| args[0] == "bench-open" || args[0] == "bench-unlink")
            {
                let _: Result<_, _> = fs::remove_dir_all(dir);
                fs::create_dir_all(dir)?;
            }
            field(&run(Command::new(w).args(&args))?, "ns_per_op")
        })
    };
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        Workload {
            name: "pwrite 64 B (tmpfs)".into(),
            run: helper(a(&["bench-pwrite", "{S}/fast/p64", "64", "1000000"])),
        },
        Workload {
            name: "pwrite 4 KiB (tmpfs)".into(),
            run: helper(a(&["bench-pwrite", "{S}/fast/p4k", "4096", "300000"])),
        },
        Workload {
            name: "getppid (not watched)".into(),
            run: helper(a(&["bench-getppid", "2000000"])),
        },
        Workload {
            name: "openat+close (create)".into(),
            run: helper(a(&["bench-open", "{S}/fast/open", "100000"])),
        },
        Workload {
            name: "utimensat, times now (one file)".into(),
            run: helper(a(&["bench-utimens", "{S}/fast/lock", "300000"])),
        },
        Workload {
            name: "utimensat, old times (as tar, cp -a)".into(),
            run: helper(a(&["bench-utimens", "{S}/fast/stamp", "300000", "old"])),
        },
        Workload {
            name: "unlink".into(),
            run: helper(a(&["bench-unlink", "{S}/fast/unlink", "100000"])),
        },
        Workload {
            name: "rm -rf 100k files".into(),
            run: Box::new(|w: &Path, s: &Scratch| {
                let tree = s.path("fast/tree");
                let _: Result<_, _> = fs::remove_dir_all(&tree);
                fs::create_dir_all(&tree)?;
                run(Command::new(w).args(["create-files", &tree, "100000"]))?;
                let t = Instant::now();
                run(Command::new("rm").args(["-rf", &tree]))?;
                Ok(t.elapsed().as_nanos() as f64 / 100_000.0)
            }),
        },
    ]
}

/// Machine, kernel and commit of a run.
fn header(root: &Path, rounds: usize) -> anyhow::Result<Value> {
    Ok(json!({
        "kernel": run(Command::new("uname").arg("-r"))?.trim(),
        "cpu": fs::read_to_string("/proc/cpuinfo")?.lines().find_map(|l| l.strip_prefix("model name\t: ")).unwrap_or("?"),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "commit": run(Command::new("git").args(["rev-parse", "--short", "HEAD"]).current_dir(root)).unwrap_or_default().trim(),
        "rounds": rounds,
    }))
}

/// `--only storm`: the storms and the steady rate, `rounds` storms per output setting.
pub fn storm_only(
    root: &Path,
    tools: &Tools,
    observer: &Path,
    rounds: usize,
) -> anyhow::Result<Value> {
    let helper = build_helper(root, tools)?;
    let scratch = Scratch::new()?;
    let out_dir = std::env::temp_dir();
    let storms = storm::storms(observer, &helper, &scratch, &out_dir, rounds)?;
    let steady = storm::steady_rate(observer, &helper, &scratch, &out_dir)?;
    Ok(json!({"header": header(root, rounds)?, "enospc_storm": storms, "steady_10k": steady}))
}

/// `--only table`: the workload table alone.
pub fn table_only(
    root: &Path,
    tools: &Tools,
    observer: &Path,
    rounds: usize,
) -> anyhow::Result<Value> {
    let helper = build_helper(root, tools)?;
    let scratch = Scratch::new()?;
    let rows = table(
        &helper,
        observer,
        &tools.ebpf_object,
        &scratch,
        &std::env::temp_dir(),
        rounds,
    )?;
    Ok(json!({"header": header(root, rounds)?, "workloads": rows}))
}

/// Builds the workload helper (`fsobs-workload`).
fn build_helper(root: &Path, tools: &Tools) -> anyhow::Result<PathBuf> {
    let mut build = cargo::cargo(root, tools);
    build.args([
        "build",
        "--release",
        "-p",
        "integration-tests",
        "--bin",
        "fsobs-workload",
    ]);
    if !build.status()?.success() {
        bail!("building fsobs-workload failed");
    }
    Ok(root.join("target/release/fsobs-workload"))
}

pub fn bench(
    root: &Path,
    tools: &Tools,
    observer: &Path,
    rounds: usize,
    json_out: Option<&Path>,
) -> anyhow::Result<Value> {
    if !nix_is_root() {
        bail!("cargo xtask bench needs root (it loads the observer and mounts tmpfs)");
    }
    let observer = observer.to_path_buf();
    let helper = build_helper(root, tools)?;
    let scratch = Scratch::new()?;
    let out_dir = std::env::temp_dir();
    let header = header(root, rounds)?;
    println!(
        "fsobserver bench: kernel {} | {} | {} CPUs | {} rounds",
        header["kernel"], header["cpu"], header["cpus"], rounds
    );

    let rows = table(
        &helper,
        &observer,
        &tools.ebpf_object,
        &scratch,
        &out_dir,
        rounds,
    )?;
    let storm = storm::storms(&observer, &helper, &scratch, &out_dir, 3)?;
    let stream = tail_stream(&observer, &helper, &scratch, &out_dir)?;
    let locks = lock_latency(&observer, &out_dir, 1000)?;
    let purge = purge_cost(&observer, &out_dir, 10, 50_000)?;
    let steady = storm::steady_rate(&observer, &helper, &scratch, &out_dir)?;
    let programs = programs::bpf_stats(&observer, &helper, &scratch, &out_dir)?;
    let per_op = programs::per_operation(&observer, &helper, &scratch, &out_dir, rounds)?;
    let report = json!({"header": header, "workloads": rows, "enospc_storm": storm, "tail_stream": stream, "lock_flag_latency": locks, "purge": purge, "steady_10k": steady, "programs": programs, "program_time": per_op});
    if let Some(path) = json_out {
        fs::write(path, serde_json::to_string_pretty(&report)?)?;
        println!("JSON written to {}", path.display());
    }
    Ok(report)
}

/// The workload table: each workload without the observer, with the kernel floor, with empty
/// programs on the observer's tracepoints, with a raw `sys_exit` dispatcher's floor, with the
/// peer (bpftrace) and with the observer, in alternation for `rounds` rounds; medians, ratios,
/// and the observer's added time over the peer's.
pub fn table(
    helper: &Path,
    observer: &Path,
    object: &Path,
    scratch: &Scratch,
    out_dir: &Path,
    rounds: usize,
) -> anyhow::Result<Vec<Value>> {
    peer::ensure()?;
    let mut wl = workloads();
    wl.extend(real::workloads(scratch)?);
    let n = wl.len();
    let (mut without, mut floor, mut peer_v, mut with) = (
        vec![Vec::new(); n],
        vec![Vec::new(); n],
        vec![Vec::new(); n],
        vec![Vec::new(); n],
    );
    let (mut empty, mut dispatch) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    for round in 0..rounds {
        for (i, w) in wl.iter().enumerate() {
            without[i].push((w.run)(helper, scratch)?);
            if let Some(_on) = FloorTracepoint::enable() {
                floor[i].push((w.run)(helper, scratch)?);
            }
            let p = prototype::Prototype::start(object, prototype::Kind::Empty)?;
            empty[i].push((w.run)(helper, scratch)?);
            drop(p);
            let p = prototype::Prototype::start(object, prototype::Kind::Dispatch)?;
            dispatch[i].push((w.run)(helper, scratch)?);
            drop(p);
            let p = peer::Peer::start()?;
            peer_v[i].push((w.run)(helper, scratch)?);
            drop(p);
            let obs = Observer::start(observer, out_dir)?;
            with[i].push((w.run)(helper, scratch)?);
            obs.stop()?;
        }
        eprintln!("xtask: bench round {}/{rounds} done", round + 1);
    }
    let mut rows = Vec::new();
    println!(
        "| workload (ns/op, or ms) | without | kernel floor | empty programs | dispatcher floor | bpftrace | observer | floor x | empty x | dispatcher x | bpftrace x | observer x | added: observer / bpftrace |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (i, w) in wl.iter().enumerate() {
        let a = median(&mut without[i]);
        let b = median(&mut with[i]);
        let p = median(&mut peer_v[i]);
        let f = (!floor[i].is_empty()).then(|| median(&mut floor[i]));
        let e = median(&mut empty[i]);
        let d = median(&mut dispatch[i]);
        let show = |v: Option<f64>, digits: usize| {
            v.map_or("n/a".to_string(), |v| format!("{v:.digits$}"))
        };
        let digits = if a < 10_000.0 && w.name.ends_with("(ms)") {
            1
        } else {
            0
        };
        let added = (p - a > 0.0).then(|| (b - a) / (p - a));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
            w.name,
            show(Some(a), digits),
            show(f, digits),
            show(Some(e), digits),
            show(Some(d), digits),
            show(Some(p), digits),
            show(Some(b), digits),
            show(f.map(|f| f / a), 3),
            e / a,
            d / a,
            p / a,
            b / a,
            show(added, 2),
        );
        rows.push(
            json!({"workload": w.name, "without_ns": a, "floor_ns": f, "empty_ns": e,
            "dispatch_ns": d, "empty_ratio": e / a, "dispatch_ratio": d / a, "peer_ns": p,
            "with_ns": b, "floor_ratio": f.map(|f| f / a), "peer_ratio": p / a, "ratio": b / a,
            "added_vs_peer": added}),
        );
    }
    println!(
        "(kernel floor: one unrelated sys_exit tracepoint enabled through tracefs, no program: \
         the syscall slow path every call takes once any sys_exit tracepoint is on; empty \
         programs: a program returning at once on each of the observer's sys_exit tracepoints; \
         dispatcher floor: one raw sys_exit program on every syscall reading its number and \
         testing it against the watched set; bpftrace: \
         xtask/src/bench/peer.bt, the same tracepoints counting less; added: the observer's \
         added time over bpftrace's)"
    );
    Ok(rows)
}

fn nix_is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(false)
}

/// 1,000,000 failing writes delivered through the daemon to one `observer tail --json` client
/// (stdout off): events/s end to end and every loss on the way.
fn tail_stream(
    observer: &Path,
    helper: &Path,
    s: &Scratch,
    out_dir: &Path,
) -> anyhow::Result<Value> {
    const N: u64 = 1_000_000;
    let obs = Observer::start_with(
        observer,
        out_dir,
        &["--no-stdout", "--set", "http.stream_buffer=262144"],
    )?;
    let mut tail = Command::new(observer)
        .args(["tail", "--json", "--addr", &obs.addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = tail.stdout.take().context("tail stdout")?;
    let counter = std::thread::spawn(move || {
        let mut lines = 0u64;
        let mut first = None;
        let mut last = Instant::now();
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if l.starts_with("{\"type\":\"syscall\"") {
                lines += 1;
                first.get_or_insert_with(Instant::now);
                last = Instant::now();
            }
        }
        (lines, first.map(|f| last.duration_since(f)))
    });
    std::thread::sleep(Duration::from_millis(500)); // let the client connect
    let pid = obs.pid();
    let cpu0 = cpu_seconds(pid);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let health = {
        let (addr, stop) = (obs.addr.clone(), stop.clone());
        std::thread::spawn(move || healthz_latencies(&addr, &stop))
    };
    let out = run(Command::new(helper).args(["storm", &s.path("full/filler"), &N.to_string()]))?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut lat = health
        .join()
        .map_err(|_| anyhow::anyhow!("healthz thread"))?;
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let (p99, max) = (pct(0.99), lat.last().copied().unwrap_or(f64::NAN));
    let secs = field(&out, "elapsed_ns")? / 1e9;
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_seconds(pid) - cpu0;
    let stats = obs.stop()?;
    let _: Result<_, _> = tail.kill();
    let mut err = String::new();
    if let Some(mut e) = tail.stderr.take() {
        use std::io::Read as _;
        let _: Result<_, _> = e.read_to_string(&mut err);
    }
    let _: Result<_, _> = tail.wait();
    let (lines, span) = counter
        .join()
        .map_err(|_| anyhow::anyhow!("counter thread"))?;
    let lagged: u64 = err
        .lines()
        .filter_map(|l| l.split("\"missed\":").nth(1))
        .filter_map(|n| n.trim_end_matches('}').parse::<u64>().ok())
        .sum();
    let rate = lines as f64 / span.map_or(secs, |d| d.as_secs_f64().max(secs));
    let v = json!({
        "failures": N,
        "storm_seconds": secs,
        "tail_received": lines,
        "tail_events_per_s": rate,
        "stream_lagged": lagged,
        "kernel_ring_drops": stats["kernel_ring_drops"],
        "userspace_queue_drops": stats["userspace_queue_drops"],
        "daemon_cpu_s": cpu,
        "healthz_samples": lat.len(),
        "healthz_p99_ms": p99,
        "healthz_max_ms": max,
    });
    println!(
        "tail stream: {N} failures in {secs:.2} s; tail received {lines} ({rate:.0}/s); lagged {lagged}, ring drops {}, queue drops {}; daemon CPU {cpu:.2} s; /healthz during the storm p99 {p99:.1} ms, max {max:.1} ms ({} requests)",
        v["kernel_ring_drops"],
        v["userspace_queue_drops"],
        lat.len()
    );
    Ok(v)
}
