//! Running test binaries one by one and holding them to their own lists: every binary is
//! listed first (`--list`), run with a time limit in its own process group, and each listed test
//! needs an outcome line (see [`crate::libtest`]).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::libtest::{Report, parse_list};
use crate::cargo::{self, Tools};

/// One test executable and where cargo would run it from.
#[derive(Clone, Debug)]
pub struct TestBinary {
    /// `<package>/<target>` (e.g. `integration-tests/locks`, `observer/observer`).
    pub label: String,
    pub exe: PathBuf,
    /// The package directory (cargo runs a test binary with it as the working directory).
    pub dir: PathBuf,
    /// An integration test (`tests/*.rs`), as opposed to a crate's unit tests.
    pub integration: bool,
}

/// Builds the test binaries of the workspace (`--release` or debug) and returns them.
pub fn build(
    root: &Path,
    tools: &Tools,
    release: bool,
    with_integration: bool,
) -> anyhow::Result<Vec<TestBinary>> {
    let mut cmd = cargo::cargo(root, tools);
    cmd.args(["test", "--no-run", "--message-format=json", "--workspace"])
        .args(["--exclude", "observer-ebpf"]);
    if release {
        cmd.arg("--release");
    }
    if !with_integration {
        cmd.args(["--exclude", "integration-tests"]);
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("building the tests failed ({})", out.status);
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        let kinds = &v["target"]["kind"];
        let integration = kinds
            .as_array()
            .is_some_and(|k| k.iter().any(|x| x == "test"));
        let manifest = PathBuf::from(v["manifest_path"].as_str().unwrap_or_default());
        let package = manifest
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        bins.push(TestBinary {
            label: format!("{package}/{}", v["target"]["name"].as_str().unwrap_or("?")),
            exe: PathBuf::from(exe),
            dir: manifest.parent().map(Path::to_path_buf).unwrap_or_default(),
            integration,
        });
    }
    if bins.is_empty() {
        bail!("cargo built no test binaries");
    }
    bins.sort_by(|a, b| (a.integration, &a.label).cmp(&(b.integration, &b.label)));
    Ok(bins)
}

/// The tests `exe` holds (those matching `filter`).
pub fn list(exe: &Path, filter: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut cmd = Command::new(exe);
    cmd.arg("--list");
    if let Some(f) = filter {
        cmd.arg(f);
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot list the tests of {}", exe.display()))?;
    if !out.status.success() {
        bail!("{} --list failed ({})", exe.display(), out.status);
    }
    Ok(parse_list(&String::from_utf8_lossy(&out.stdout)))
}

/// Runs one test binary (`--test-threads=1`) with `envs`, echoing its output (as it comes when
/// `live`, else in one block at its end), and holds it to `expected`. Past `limit` the binary and everything it started are killed,
/// and the tests without an outcome are missing.
pub fn run(
    bin: &TestBinary,
    expected: &[String],
    filter: Option<&str>,
    skip: &[&str],
    envs: &[(&str, &std::ffi::OsStr)],
    limit: Duration,
    live: bool,
) -> anyhow::Result<Report> {
    let mut cmd = Command::new(&bin.exe);
    for s in skip {
        cmd.args(["--skip", s]);
    }
    cmd.current_dir(&bin.dir)
        .env("CARGO_MANIFEST_DIR", &bin.dir)
        .args(["--test-threads=1"])
        .args(super::libtest::TIME_ARGS)
        .env("RUSTC_BOOTSTRAP", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Its own process group, so a time-out kills the observers and workloads it started.
        .process_group(0);
    if let Some(f) = filter {
        cmd.arg(f);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", bin.exe.display()))?;
    let pgid = child.id() as i32;
    let stdout = child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let mut out = std::io::stdout();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if live {
                let _ = writeln!(out, "{line}");
            }
            text.push_str(&line);
            text.push('\n');
        }
        if !live {
            // One block per binary when binaries run side by side (one write, one lock).
            let _: std::io::Result<()> = out.lock().write_all(text.as_bytes());
        }
        text
    });
    let mut timed_out = false;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > limit {
            timed_out = true;
            // SAFETY: plain kill(2) of the process group we created.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _: Result<_, _> = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = reader.join().unwrap_or_default();
    // Whatever is left of the group (a child the test leaked) goes too.
    // SAFETY: as above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if timed_out {
        eprintln!(
            "xtask: {} ran past its {} s limit and was killed",
            bin.label,
            limit.as_secs()
        );
    }
    Ok(Report::from_output(expected, &text))
}
