//! `cargo xtask vm-test`: the integration tests inside other kernels under qemu (software
//! emulation). Static test binaries + busybox are packed into an initramfs whose /init mounts
//! the kernel filesystems, runs every integration test binary with the probe mode named on the
//! kernel command line, prints a verdict line on the second serial port and powers off.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    kernels::{self, Kernel},
    libtest::{Cell, Report},
    run,
};
use crate::cargo::{self, Tools};

const TARGET: &str = "x86_64-unknown-linux-gnu";
/// Hard limit for one boot (TCG is slow; a hung guest must not hang CI).
const VM_TIMEOUT: Duration = Duration::from_secs(900);

/// Probe modes to run in the guests. The tracepoint set is forced; `auto` lets the observer
/// choose (the test then expects what the kernel allows).
pub const DEFAULT_MODES: &[&str] = &["tracepoint", "fexit"];
/// The default matrix: 6.1 and 6.12 in both modes, 5.10 in fexit mode (what `auto` picks
/// there). The host kernel runs the tracepoint set in `cargo xtask test` itself. Ordered so the
/// two cells that run at a time finish together (measured 2026-12-03 with the host tests
/// beside the first two, seconds: 5.10 fexit 486, 6.1 fexit 398, 6.12 fexit 179, 6.1 tracepoint
/// 225, 6.12 tracepoint 145 — the queues end at 711 and 722).
pub const DEFAULT_MATRIX: &[(&str, &str)] = &[
    ("5.10", "fexit"),
    ("6.1", "fexit"),
    ("6.12", "fexit"),
    ("6.1", "tracepoint"),
    ("6.12", "tracepoint"),
];

struct GuestBins {
    observer: PathBuf,
    workload: PathBuf,
    tests: Vec<PathBuf>,
}

/// The runs to make: the cross product of the given kernels and modes, each defaulting to the
/// default matrix's when empty.
pub fn matrix(kernels: &[String], modes: &[String]) -> Vec<(String, String)> {
    if kernels.is_empty() && modes.is_empty() {
        return DEFAULT_MATRIX
            .iter()
            .map(|(k, m)| (k.to_string(), m.to_string()))
            .collect();
    }
    let or = |v: &[String], d: &[&str]| -> Vec<String> {
        if v.is_empty() {
            d.iter().map(|s| s.to_string()).collect()
        } else {
            v.to_vec()
        }
    };
    let kernels = or(kernels, &["5.10", "6.1", "6.12"]);
    let modes = or(modes, DEFAULT_MODES);
    kernels
        .iter()
        .flat_map(|k| modes.iter().map(move |m| (k.clone(), m.clone())))
        .collect()
}

/// Boots every `(kernel, mode)` pair of `runs`, running the tests matching `filter`; one
/// cell per boot.
pub fn vm_test(
    root: &Path,
    tools: &Tools,
    runs: &[(String, String)],
    filter: Option<&str>,
) -> anyhow::Result<Vec<Cell>> {
    prepare(root, tools, runs, filter)?.run()
}

/// Everything the boots need, made before any boots: the kernels, the static binaries, their
/// test lists and the initramfs.
pub struct Prepared {
    runs: Vec<(String, String)>,
    filter: Option<String>,
    kernels: Vec<Kernel>,
    expected: Vec<(String, Vec<String>)>,
    initrd: PathBuf,
    work: tempfile::TempDir,
}

/// Fetches the kernels of `runs`, builds the static binaries and packs the initramfs (the
/// compiling part, so it does not compete with tests running beside the boots).
pub fn prepare(
    root: &Path,
    tools: &Tools,
    runs: &[(String, String)],
    filter: Option<&str>,
) -> anyhow::Result<Prepared> {
    ensure_host_packages(&[
        ("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
        ("/bin/busybox", "busybox-static"),
        ("/usr/bin/cpio", "cpio"),
    ])?;
    let cache = crate::toolchain::machine_cache(root);
    let mut kernels: Vec<Kernel> = Vec::new();
    for (spec, _) in runs {
        if !kernels.iter().any(|k| &k.label == spec) {
            kernels.push(kernels::fetch(&cache, spec)?);
        }
    }
    let bins = build_static(root, tools)?;
    // The static test binaries run on the host too: their lists are what each guest must
    // report on.
    let mut expected = Vec::new();
    for t in &bins.tests {
        expected.push((binary_label(t), run::list(t, filter)?));
    }
    let work = tempfile::Builder::new().prefix("fsobs-vm-").tempdir()?;
    let initrd = pack_initramfs(work.path(), &bins)?;
    Ok(Prepared {
        runs: runs.to_vec(),
        filter: filter.map(str::to_string),
        kernels,
        expected,
        initrd,
        work,
    })
}

impl Prepared {
    /// Boots the cells, `FSOBS_VM_JOBS` (2) at a time.
    pub fn run(&self) -> anyhow::Result<Vec<Cell>> {
        let runs = &self.runs;
        // Cells run `jobs` at a time: much of a cell is waiting (timers, stale locks, polls), so
        // two emulated machines share two cores better than one does.
        let jobs = super::jobs_from_env("FSOBS_VM_JOBS", 2);
        let printing = std::sync::Mutex::new(());
        let cells = super::in_parallel(jobs, runs, |(spec, mode)| {
            let k = self.kernels.iter().find(|k| &k.label == spec)?;
            eprintln!("xtask: vm {} ({}) mode {mode}: booting", k.label, k.package);
            let boot_once = || {
                boot(
                    self.work.path(),
                    k,
                    &self.initrd,
                    mode,
                    self.filter.as_deref(),
                    &self.expected,
                )
            };
            let (mut cell, mut log) = boot_once();
            let ran_nothing = |c: &Cell| {
                let t = c.report.tally();
                c.error.is_some() && t.passed + t.failed + t.skipped == 0
            };
            if ran_nothing(&cell) {
                // The guest never reached a test (a boot that failed under emulation, console
                // above): once more, said so. A guest that ran tests is never booted again.
                eprintln!(
                    "xtask: vm {} mode {mode}: the guest ran no test; booting it once more",
                    k.label
                );
                let first = cell.seconds;
                (cell, log) = boot_once();
                cell.seconds += first;
            }
            let t = cell.report.tally();
            let _one_at_a_time = printing.lock().unwrap_or_else(|p| p.into_inner());
            print!("{log}");
            eprintln!(
                "vm-verdict: {} passed={} failed={} skipped={} missing={} seconds={:.1}{}",
                cell.name,
                t.passed,
                t.failed,
                t.skipped,
                t.missing,
                cell.seconds,
                cell.error
                    .as_deref()
                    .map(|e| format!(" error={e:?}"))
                    .unwrap_or_default()
            );
            Some(cell)
        });
        Ok(cells.into_iter().flatten().collect())
    }
}

/// `locks` for `.../deps/locks-0123abcd`.
fn binary_label(exe: &Path) -> String {
    let name = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rsplit_once('-') {
        Some((base, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => base.to_string(),
        _ => name,
    }
}

/// Installs the Debian packages whose marker file is missing.
pub fn ensure_host_packages(wanted: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(_, pkg)| pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(&missing);
    let installed = apt(&install) || (apt(&["update", "-qq"]) && apt(&install));
    if !installed {
        bail!("cannot install {} with apt-get", missing.join(" "));
    }
    Ok(())
}

/// Static observer, workload helper and integration-test executables (separate target dir).
fn build_static(root: &Path, tools: &Tools) -> anyhow::Result<GuestBins> {
    let target_dir = root.join("target/vm");
    let static_cargo = || {
        let mut c = cargo::cargo(root, tools);
        // `fsobs_vm`: host-only tests are built `#[ignore]`d, with their reason.
        c.env("RUSTFLAGS", "-C target-feature=+crt-static --cfg fsobs_vm")
            .args(["--release", "--target", TARGET, "--target-dir"])
            .arg(&target_dir);
        c
    };
    let mut build = static_cargo();
    build.args(["--package", "observer"]);
    build_cmd(build, "build")?;
    let mut test = static_cargo();
    test.args([
        "--package",
        "integration-tests",
        "--no-run",
        "--message-format=json",
    ]);
    let out = build_cmd(test, "test")?;
    let mut tests = Vec::new();
    for line in out.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test_target = v["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|x| x == "test"));
        if v["reason"] == "compiler-artifact"
            && is_test_target
            && let Some(exe) = v["executable"].as_str()
        {
            tests.push(PathBuf::from(exe));
        }
    }
    if tests.is_empty() {
        bail!("no integration-test executables were built");
    }
    let bin_dir = target_dir.join(TARGET).join("release");
    Ok(GuestBins {
        observer: bin_dir.join("observer"),
        workload: bin_dir.join("fsobs-workload"),
        tests,
    })
}

/// Runs `cargo <sub> ...` (the subcommand goes first) and returns its stdout.
fn build_cmd(cmd: Command, sub: &str) -> anyhow::Result<String> {
    let mut full = Command::new(cmd.get_program());
    full.arg(sub).args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        full.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => full.env(k, v),
            None => full.env_remove(k),
        };
    }
    let out = full
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {full:?}"))?;
    if !out.status.success() {
        bail!("{full:?} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up 2>/dev/null
hostname fsobs-vm
stty -F /dev/ttyS1 raw -echo 2>/dev/null
exec 3>/dev/ttyS1
MODE=tracepoint
FILTER=
for w in $(cat /proc/cmdline); do
  case "$w" in
    fso.mode=*) MODE="${w#fso.mode=}";;
    fso.filter=*) FILTER="${w#fso.filter=}";;
  esac
done
echo "VMTEST-START kernel=$(uname -r) mode=$MODE uptime=$(cut -d' ' -f1 /proc/uptime)" >&3
export OBSERVER_BIN=/t/observer OBSERVER_PROBE_MODE="$MODE" OBSERVER_IN_VM=1
rc=0
for t in /t/deps/*; do
  echo "VMTEST-BIN ${t##*/} uptime=$(cut -d' ' -f1 /proc/uptime)" >&3
  RUSTC_BOOTSTRAP=1 "$t" --test-threads=1 -Z unstable-options --report-time $FILTER >&3 2>&3 || rc=1
  echo "VMTEST-BIN-EXIT ${t##*/} uptime=$(cut -d' ' -f1 /proc/uptime)" >&3
done
echo "VMTEST-EXIT=$rc uptime=$(cut -d' ' -f1 /proc/uptime)" >&3
sync
poweroff -f
"#;

fn pack_initramfs(work: &Path, bins: &GuestBins) -> anyhow::Result<PathBuf> {
    let root = work.join("root");
    for d in ["bin", "proc", "sys", "dev", "tmp", "run", "t/deps"] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::copy("/bin/busybox", root.join("bin/busybox"))?;
    fs::copy(&bins.observer, root.join("t/observer"))?;
    fs::copy(&bins.workload, root.join("t/fsobs-workload"))?;
    for t in &bins.tests {
        let name = t.file_name().context("test name")?;
        fs::copy(t, root.join("t/deps").join(name))?;
    }
    let init = root.join("init");
    fs::write(&init, INIT)?;
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    let initrd = work.join("initrd.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . | cpio -o -H newc --quiet | gzip -1 > \"$0\"")
        .arg(&initrd)
        .current_dir(&root)
        .status()?;
    if !status.success() {
        bail!("packing the initramfs failed");
    }
    Ok(initrd)
}

fn boot(
    work: &Path,
    k: &Kernel,
    initrd: &Path,
    mode: &str,
    filter: Option<&str>,
    expected: &[(String, Vec<String>)],
) -> (Cell, String) {
    let started = Instant::now();
    let console = work.join(format!("console-{}-{mode}.log", k.label));
    let out = work.join(format!("out-{}-{mode}.log", k.label));
    let mut append = format!(
        "console=ttyS0 edd=off panic=-1 oops=panic loglevel=4 rdinit=/init fso.mode={mode} \
         no_timer_check"
    );
    // no_timer_check: a starved emulated CPU (two guests beside the host tests on two cores)
    // can miss the boot-time check of the IO-APIC timer, and 5.10 then panics before init.
    if let Some(f) = filter {
        append.push_str(&format!(" fso.filter={f}"));
    }
    // Niced: host tests that run beside the boots keep the CPU they ask for (their timing is
    // the real kernel's), the guests take what is left.
    let status = Command::new("nice")
        .args(["-n", "10", "timeout"])
        .args([
            "-k",
            "5",
            &VM_TIMEOUT.as_secs().to_string(),
            "qemu-system-x86_64",
        ])
        .args([
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-m",
            "1G",
            "-smp",
            "2",
        ])
        .args([
            "-display",
            "none",
            "-no-reboot",
            "-nodefaults",
            "-monitor",
            "none",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", out.display()))
        .arg("-kernel")
        .arg(&k.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(append)
        .stdin(Stdio::null())
        .status();
    let seconds = started.elapsed().as_secs_f64();
    let text = fs::read(&out)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_default();
    let mut exit = None;
    let mut log = String::new();
    // Each binary's output, by label (between its VMTEST-BIN and VMTEST-BIN-EXIT markers).
    let mut chunks: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("VMTEST-EXIT=") {
            exit = rest
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<i32>().ok());
        } else if let Some(rest) = line.strip_prefix("VMTEST-BIN ") {
            let name = rest.split_whitespace().next().unwrap_or_default();
            chunks.push((binary_label(Path::new(name)), String::new()));
        } else if let Some((_, chunk)) = chunks.last_mut()
            && !line.starts_with("VMTEST-")
        {
            chunk.push_str(line);
            chunk.push('\n');
        }
        log.push_str(&format!("  [{} {mode}] {line}\n", k.label));
    }
    let mut report = Report::default();
    for (label, names) in expected {
        let chunk = chunks
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, c)| c.as_str())
            .unwrap_or("");
        report.extend(&format!("{label}::"), Report::from_output(names, chunk));
    }
    let error = match (exit, &status) {
        (Some(_), _) => None,
        (None, st) => {
            let tail: String = fs::read_to_string(&console)
                .unwrap_or_default()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!(
                "xtask: {} {mode}: no verdict from the guest; console tail:\n{tail}",
                k.label
            );
            Some(format!("no verdict from the guest (qemu: {st:?})"))
        }
    };
    let cell = Cell {
        name: format!("{} {mode} ({})", k.label, k.package),
        report,
        seconds,
        error,
    };
    (cell, log)
}
