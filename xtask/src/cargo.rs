//! Cargo invocations with the environment the eBPF build needs.

use std::{
    ffi::OsString,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::toolchain::Tools;

/// `PATH` with the project's tools first.
fn path_with(tools: &Tools) -> OsString {
    let mut path = OsString::from(&tools.bin);
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    path
}

pub fn cargo(root: &Path, tools: &Tools) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root)
        .env("PATH", path_with(tools))
        // A stub object must never reach a binary we run or test.
        .env("OBSERVER_REQUIRE_EBPF", "1");
    cmd
}

fn status(mut cmd: Command) -> anyhow::Result<()> {
    let st = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

/// Builds `target/release/observer` and returns its path.
pub fn build_observer(root: &Path, tools: &Tools) -> anyhow::Result<PathBuf> {
    let mut cmd = cargo(root, tools);
    cmd.args(["build", "--release", "--package", "observer"]);
    status(cmd)?;
    Ok(root.join("target/release/observer"))
}

/// Replaces this process with `observer run ARGS`.
pub fn exec_observer(bin: &Path, args: &[String]) -> anyhow::Result<()> {
    let err = Command::new(bin).arg("run").args(args).exec();
    Err(err).with_context(|| format!("cannot exec {}", bin.display()))
}

/// Unit tests of every crate, then the real-kernel integration tests (one at a time: they
/// mount filesystems and load programs).
pub fn test_all(
    root: &Path,
    tools: &Tools,
    bin: &Path,
    filter: Option<&str>,
) -> anyhow::Result<Totals> {
    let mut cmd = cargo(root, tools);
    cmd.args([
        "test",
        "--release",
        // Every test binary runs even after one fails: the tally covers everything.
        "--no-fail-fast",
        "--workspace",
        "--exclude",
        "observer-ebpf",
    ])
    .env("OBSERVER_BIN", bin)
    .arg("--");
    if let Some(f) = filter {
        cmd.arg(f);
    }
    cmd.arg("--test-threads=1");
    let totals = run_counting(cmd)?;
    println!(
        "host: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    Ok(totals)
}

#[derive(Default, Clone, Copy)]
pub struct Totals {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    pub success: bool,
}

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
        self.success &= other.success;
    }

    /// The error for a failed or empty run.
    pub fn verdict(&self) -> anyhow::Result<()> {
        if self.failed > 0 || !self.success {
            bail!("{} test(s) failed", self.failed.max(1));
        }
        if self.passed == 0 {
            bail!("no test ran");
        }
        Ok(())
    }

    /// Adds a libtest summary line: `test result: ok. 12 passed; 0 failed; 1 ignored; ...`.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match kind {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs `cmd`, echoing its stdout while summing libtest result lines.
fn run_counting(mut cmd: Command) -> anyhow::Result<Totals> {
    use std::io::{BufRead as _, BufReader, Write as _};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let mut totals = Totals::default();
    let stdout = child.stdout.take().context("no stdout")?;
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        totals.add_line(&line);
        writeln!(out, "{line}")?;
    }
    totals.success = child.wait()?.success();
    Ok(totals)
}
