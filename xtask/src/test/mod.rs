//! `cargo xtask test`: every test, each held to its binary's list, on the host and in the
//! kernel matrix, with the machine guard around the whole run and one closing line.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::bail;

mod guard;
pub mod kernels;
mod libtest;
mod run;
pub mod vm;

use crate::{cargo, toolchain};
use libtest::{Cell, Report, Tally};
use run::TestBinary;

pub struct Options {
    /// Only tests whose name contains this (host and VMs alike).
    pub filter: Option<String>,
    /// Run the kernel matrix.
    pub vm: bool,
    /// The development loop: the tests that mostly wait are left out (and said so).
    pub quick: bool,
}

/// Time limits per test binary (a hung test must not hang CI).
const UNIT_LIMIT: Duration = Duration::from_secs(600);
const INTEGRATION_LIMIT: Duration = Duration::from_secs(2400);

/// Test binaries run this many at a time on the host (`FSOBS_HOST_JOBS`). Integration tests
/// mostly wait (a third of a core each here) and hold themselves to their own processes, paths
/// and filesystems (an observer whose bounded lists or drop counts a test asserts watches only
/// that test's filesystem), so two binaries share the machine as two jobs on a node do.
/// `FSOBS_HOST_JOBS=1` runs them one at a time.
fn host_jobs() -> usize {
    jobs_from_env("FSOBS_HOST_JOBS", 2)
}

/// How many at a time `var` asks for; `default` when unset or unreadable.
pub fn jobs_from_env(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|j| j.parse::<usize>().ok())
        .unwrap_or(default)
        .max(1)
}

/// `f` of every item, `jobs` at a time (each worker takes the next item when it is free); the
/// results in the items' order.
pub fn in_parallel<T: Sync, R: Send>(
    jobs: usize,
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done: std::sync::Mutex<Vec<(usize, R)>> = std::sync::Mutex::default();
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else {
                        break;
                    };
                    let r = f(item);
                    done.lock().unwrap_or_else(|p| p.into_inner()).push((i, r));
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|p| p.into_inner());
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

fn run_binaries(
    name: &str,
    bins: &[TestBinary],
    filter: Option<&str>,
    skip: &[&str],
    envs: &[(&str, &std::ffi::OsStr)],
) -> anyhow::Result<Cell> {
    let started = Instant::now();
    let mut todo = Vec::new();
    for b in bins {
        let mut expected = run::list(&b.exe, filter)?;
        expected.retain(|t| !skip.iter().any(|s| t.contains(s)));
        if !expected.is_empty() {
            todo.push((b, expected));
        }
    }
    let jobs = host_jobs();
    let done = in_parallel(jobs, &todo, |(b, expected)| {
        let limit = if b.integration {
            INTEGRATION_LIMIT
        } else {
            UNIT_LIMIT
        };
        run::run(
            b,
            expected,
            filter,
            skip,
            envs,
            limit,
            jobs.min(todo.len()) == 1,
        )
    });
    let mut report = Report::default();
    for ((b, _), r) in todo.iter().zip(done) {
        report.extend(&format!("{}::", b.label), r?);
    }
    Ok(Cell {
        name: name.into(),
        report,
        seconds: started.elapsed().as_secs_f64(),
        error: None,
    })
}

/// Host tests that spend their time waiting, not computing: run beside the kernel matrix.
const BESIDE_THE_VMS: &[&str] = &["prometheus_fires_the_shipped_alerts"];

pub fn test(root: &Path, opts: &Options) -> anyhow::Result<()> {
    if let Some(f) = &opts.filter
        && !f
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        bail!("test filter {f:?}: letters, digits, '_' and ':' only");
    }
    let filter = opts.filter.as_deref();
    let tools = toolchain::ensure(root)?;
    habits(root, &tools)?;
    // tracefs is a system facility the observer mounts when it is missing: mounted before the
    // guard's first look, so the guard holds the tests to everything else.
    ensure_tracefs()?;
    let before = guard::Snapshot::take(root);
    for p in before.preexisting() {
        eprintln!("xtask: warning: {p}");
    }
    let observer = cargo::build_observer(root, &tools)?;
    vm::ensure_host_packages(&[
        ("/usr/sbin/mkfs.btrfs", "btrfs-progs"),
        ("/usr/bin/promtool", "prometheus"),
        ("/usr/bin/git", "git"),
        ("/usr/bin/chromium", "chromium"),
        ("/usr/bin/fusermount3", "fuse3"),
        ("/usr/lib/python3/dist-packages/fusepy.py", "python3-fusepy"),
        ("/usr/bin/curl", "curl"),
        ("/usr/bin/node", "nodejs"),
        ("/usr/bin/npm", "npm"),
    ])?;
    ensure_podman()?;
    // The image the container tier runs the observer from (a few seconds: no compiling).
    let image = crate::image::build(root, &observer)?;
    toolchain::ensure_python_deps(root)?;
    toolchain::ensure_node_deps(root)?;

    let mut cells = Vec::new();
    // Unit tests once in debug: overflow checks and debug assertions on.
    let debug = run::build(root, &tools, false, false)?;
    cells.push(run_binaries(
        "host, debug (unit)",
        &debug,
        filter,
        &[],
        &[],
    )?);
    let release = run::build(root, &tools, true, true)?;
    let envs = [
        ("OBSERVER_BIN", observer.as_os_str()),
        ("OBSERVER_IMAGE", image.as_os_str()),
    ];
    // Tests that mostly wait (Prometheus sitting out its alerts' `for:` windows) run after the
    // other host tests, beside the kernel matrix, when the whole run is asked for.
    let beside: &[&str] = if (opts.vm || opts.quick) && filter.is_none() {
        BESIDE_THE_VMS
    } else {
        &[]
    };
    if opts.quick && !beside.is_empty() {
        eprintln!(
            "xtask: --quick leaves out the tests that wait (a full run runs them beside the kernel matrix): {}",
            beside.join(", ")
        );
    }
    // The kernel matrix is made ready first (kernels, the static build, the initramfs: the
    // compiling part), then boots beside the host tests: those mostly wait, the guests compute,
    // and qemu runs niced so the host tests keep the CPU they ask for.
    let vms = if opts.vm {
        Some(vm::prepare(root, &tools, &vm::matrix(&[], &[]), filter)?)
    } else {
        eprintln!("xtask: the kernel matrix was NOT run (--no-vm)");
        None
    };
    std::thread::scope(|s| -> anyhow::Result<()> {
        let booted = vms.as_ref().map(|v| s.spawn(|| v.run()));
        let host = run_binaries("host", &release, filter, beside, &envs);
        let mut waited = Cell {
            name: "host, beside the VMs".into(),
            report: Report::default(),
            seconds: 0.0,
            error: None,
        };
        if opts.vm {
            for t in beside {
                match run_binaries("host, beside the VMs", &release, Some(t), &[], &envs) {
                    Ok(c) => {
                        waited.report.extend("", c.report);
                        waited.seconds += c.seconds;
                    }
                    Err(e) => waited.error = Some(format!("{e:#}")),
                }
            }
        }
        cells.push(host?);
        if let Some(b) = booted {
            let vms = b
                .join()
                .map_err(|_| anyhow::anyhow!("the kernel matrix panicked"))?;
            cells.extend(vms?);
            if !beside.is_empty() {
                cells.push(waited);
            }
        }
        Ok(())
    })?;
    // The guests' work directory goes before the guard looks.
    drop(vms);

    let after = guard::Snapshot::take(root);
    let changes = before.changes(&after);
    summarize(&cells, &changes, opts.vm, filter.is_some())
}

/// `cargo xtask test --list`: every test of every binary (the test catalogue).
pub fn list_all(root: &Path) -> anyhow::Result<()> {
    let tools = toolchain::ensure(root)?;
    let bins = run::build(root, &tools, true, true)?;
    let mut total = 0;
    for b in &bins {
        let tests = run::list(&b.exe, None)?;
        for t in &tests {
            println!("{}::{t}", b.label);
        }
        total += tests.len();
    }
    println!("{total} tests in {} binaries", bins.len());
    Ok(())
}

/// Style and lints first, as aya's CI does, so they cannot drift between sessions: rustfmt,
/// clippy over the workspace, and clippy over the kernel crate for its own target.
fn habits(root: &Path, tools: &cargo::Tools) -> anyhow::Result<()> {
    let run = |mut c: std::process::Command, what: &str| -> anyhow::Result<()> {
        eprintln!("xtask: {what}");
        let st = c.status()?;
        if !st.success() {
            bail!("{what} failed");
        }
        Ok(())
    };
    let mut fmt = cargo::cargo(root, tools);
    fmt.args(["fmt", "--all", "--check"]);
    run(fmt, "cargo fmt --all --check")?;
    let mut clippy = cargo::cargo(root, tools);
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run(
        clippy,
        "cargo clippy --workspace --all-targets -- -D warnings",
    )?;
    let mut kernel = std::process::Command::new("cargo");
    kernel
        .current_dir(root)
        .env("PATH", cargo::path_with(&tools.bin))
        .args(["+nightly", "clippy", "-p", "observer-ebpf", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args(["--", "-D", "warnings"]);
    run(
        kernel,
        "cargo +nightly clippy -p observer-ebpf --target bpfel-unknown-none",
    )
}

/// podman and runc (this host's cgroups are hybrid, which crun refuses), for the container tier
/// and `cargo xtask image`.
pub fn ensure_podman() -> anyhow::Result<()> {
    vm::ensure_host_packages(&[("/usr/bin/podman", "podman"), ("/usr/sbin/runc", "runc")])
}

/// Mounts tracefs at /sys/kernel/tracing when no tracefs is mounted.
fn ensure_tracefs() -> anyhow::Result<()> {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .any(|l| l.contains(" - tracefs "));
    if !mounted {
        eprintln!("xtask: mounting tracefs at /sys/kernel/tracing");
        let st = std::process::Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status()?;
        if !st.success() {
            bail!("cannot mount tracefs at /sys/kernel/tracing");
        }
    }
    Ok(())
}

/// The per-cell table, what failed, what was skipped and why, the machine guard's verdict,
/// and the closing line. Unfiltered, every cell must have passed tests; filtered, a cell may
/// hold none of the chosen tests (but the run as a whole must).
pub fn summarize(
    cells: &[Cell],
    changes: &[String],
    with_vm: bool,
    filtered: bool,
) -> anyhow::Result<()> {
    println!();
    println!("| cell | passed | failed | skipped | missing | seconds | result |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut total = Tally::default();
    let mut green = true;
    for c in cells {
        let t = c.report.tally();
        total.add(&t);
        let ok = c.error.is_none() && t.failed == 0 && t.missing == 0 && (t.passed > 0 || filtered);
        green &= ok;
        let result = match (&c.error, ok) {
            (Some(e), _) => format!("FAIL: {e}"),
            (None, true) => "pass".into(),
            (None, false) if t.total() == 0 => "FAIL: no test ran".into(),
            (None, false) if t.passed == 0 => "FAIL: nothing passed".into(),
            (None, false) => "FAIL".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {result} |",
            c.name, t.passed, t.failed, t.skipped, t.missing, c.seconds
        );
    }
    for c in cells {
        for (name, what) in c.report.problems() {
            println!("{what}: [{}] {name}", c.name);
        }
    }
    for c in cells {
        let slow: Vec<String> = c
            .report
            .slowest(5)
            .into_iter()
            .map(|(n, t)| format!("{} {t:.1} s", n.rsplit("::").next().unwrap_or(n)))
            .collect();
        if !slow.is_empty() {
            println!("slowest in [{}]: {}", c.name, slow.join(", "));
        }
    }
    let mut reasons: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in cells {
        for (r, n) in c.report.skip_reasons() {
            reasons
                .entry(r)
                .or_default()
                .push(format!("{} x{n}", c.name));
        }
    }
    for (r, where_) in &reasons {
        println!("skipped ({r}): {}", where_.join(", "));
    }
    if !with_vm {
        println!("skipped: the kernel matrix (--no-vm)");
    }
    if changes.is_empty() {
        println!(
            "machine guard: nothing the tests did outlived them (/tmp 1777, mounts, netns, loop devices, BPF, containers, cgroups, processes)"
        );
    } else {
        for c in changes {
            println!("machine guard: {c}");
        }
    }
    println!(
        "tests: {} passed, {} failed, {} skipped",
        total.passed,
        total.failed + total.missing,
        total.skipped
    );
    if total.passed == 0 {
        bail!("no test passed (does the filter match any test?)");
    }
    if !green || !changes.is_empty() {
        bail!(
            "{} failed, {} missing{}",
            total.failed,
            total.missing,
            if changes.is_empty() {
                String::new()
            } else {
                format!(", {} change(s) left on the machine", changes.len())
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::in_parallel;

    #[test]
    fn in_parallel_runs_each_item_once_and_keeps_their_order() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let items: Vec<u64> = (0..50).collect();
        for jobs in [0, 1, 2, 7, 100] {
            calls.store(0, std::sync::atomic::Ordering::Relaxed);
            let out = in_parallel(jobs, &items, |x| {
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Later items finish first when run side by side.
                std::thread::sleep(std::time::Duration::from_micros(50 - x));
                x * 2
            });
            assert_eq!(
                out,
                items.iter().map(|x| x * 2).collect::<Vec<_>>(),
                "jobs {jobs}"
            );
            assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 50);
        }
        assert!(in_parallel(2, &[] as &[u64], |x| *x).is_empty());
    }
}
