//! Cargo invocations with the environment the eBPF build needs.

use std::{
    ffi::OsString,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// Where the tools live (`toolchain::ensure` installs them); `bin` goes first on PATH for
/// builds.
pub struct Tools {
    pub bin: PathBuf,
    /// The eBPF object of this run (`observer/build.rs` embeds it).
    pub ebpf_object: PathBuf,
}

/// `PATH` with the project's tools (`bin`) first.
pub fn path_with(bin: &Path) -> OsString {
    let mut path = OsString::from(bin);
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    path
}

pub fn cargo(root: &Path, tools: &Tools) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root)
        .env("PATH", path_with(&tools.bin))
        // A stub object must never reach a binary we run or test.
        .env("OBSERVER_REQUIRE_EBPF", "1")
        // The object built once for this run (not once per profile and target).
        .env("OBSERVER_EBPF_OBJECT", &tools.ebpf_object);
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

/// `cargo xtask fuzz`: every `fuzz_*` unit test of the observer for `seconds` each (release,
/// one at a time); each prints its case count and rate.
pub fn fuzz(root: &Path, tools: &Tools, seconds: u64) -> anyhow::Result<()> {
    let mut cmd = cargo(root, tools);
    cmd.args([
        "test",
        "--release",
        "--package",
        "observer",
        "--bins",
        "fuzz_",
    ])
    .args(["--", "--nocapture", "--test-threads=1"])
    .env("FSOBS_FUZZ_SECS", seconds.to_string());
    status(cmd)
}

/// Replaces this process with `observer run ARGS`.
pub fn exec_observer(bin: &Path, args: &[String]) -> anyhow::Result<()> {
    let err = Command::new(bin).arg("run").args(args).exec();
    Err(err).with_context(|| format!("cannot exec {}", bin.display()))
}
