//! Toolchain pieces for the eBPF build, installed on demand.
//!
//! - rust-src for the nightly toolchain (`-Z build-std=core`);
//! - bpf-linker, built from the crates registry against the nightly sysroot's own libLLVM (no
//!   system LLVM needed) once per machine into the machine cache ([`machine_cache`], keyed by
//!   its version and that libLLVM), so a clean clone reuses it; linked into `.tools/bin`;
//! - the eBPF object itself, built once per xtask run into `target/ebpf` and handed to every
//!   cargo invocation (`OBSERVER_EBPF_OBJECT`): `observer/build.rs` embeds it instead of
//!   building its own copy per profile and target (about a minute each, five times in a test
//!   run).

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cargo::Tools;

pub const BPF_LINKER_VERSION: &str = "0.13.0";
pub const NIGHTLY: &str = "nightly";

/// Where what is built or downloaded once per machine is kept, outside any checkout (a clean
/// clone reuses it; like apt's packages, it is the machine's): `$FSOBS_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/fsobserver`, else `$HOME/.cache/fsobserver`; the checkout's `.cache` when
/// none of them can be made.
pub fn machine_cache(root: &Path) -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let dir = env("FSOBS_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("fsobserver")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/fsobserver")));
    match dir {
        Some(d) if d.is_absolute() && fs::create_dir_all(&d).is_ok() => d,
        _ => root.join(".cache"),
    }
}

pub fn ensure(root: &Path) -> anyhow::Result<Tools> {
    let tools = root.join(".tools");
    let sysroot = nightly_sysroot()?;
    ensure_rust_src(&sysroot)?;
    ensure_bpf_linker(root, &tools, &sysroot)?;
    let bin = tools.join("bin");
    let ebpf_object = build_ebpf_object(root, &bin)?;
    Ok(Tools { bin, ebpf_object })
}

/// Builds `observer-ebpf` for the BPF target the way aya-build does (same flags), with its own
/// target directory so cargo keeps it incremental: a no-op when nothing changed.
fn build_ebpf_object(root: &Path, bin: &Path) -> anyhow::Result<PathBuf> {
    let arch = match std::env::consts::ARCH {
        a if a.starts_with("riscv64") => "riscv64",
        a => a,
    };
    let target_dir = root.join("target/ebpf");
    let status = Command::new("rustup")
        .args(["run", NIGHTLY, "cargo", "build", "--quiet"])
        .args(["--package", "observer-ebpf", "--bins", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(root)
        .env("PATH", crate::cargo::path_with(bin))
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
        )
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .status()
        .context("cannot run cargo to build the eBPF object")?;
    if !status.success() {
        bail!("building the eBPF object (observer-ebpf) failed ({status})");
    }
    let object = target_dir.join("bpfel-unknown-none/release/observer");
    if !object.is_file() {
        bail!("the eBPF build left no object at {}", object.display());
    }
    Ok(object)
}

pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    let sysroot = output(Command::new("rustup").args(["run", NIGHTLY, "rustc", "--print", "sysroot"]))
        .context("the nightly toolchain is needed to build the eBPF programs (rustup toolchain install nightly)")?;
    Ok(PathBuf::from(sysroot))
}

fn ensure_rust_src(sysroot: &Path) -> anyhow::Result<()> {
    if sysroot.join("lib/rustlib/src/rust/library/core").exists() {
        return Ok(());
    }
    eprintln!("xtask: installing rust-src for {NIGHTLY}");
    output(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))?;
    Ok(())
}

/// bpf-linker at `tools/bin/bpf-linker`: a link to the machine cache's build for this version
/// and this nightly's libLLVM, built there first when it is missing.
fn ensure_bpf_linker(root: &Path, tools: &Path, sysroot: &Path) -> anyhow::Result<()> {
    let linker = tools.join("bin/bpf-linker");
    let runs = |l: &Path| {
        output(Command::new(l).arg("--version")).is_ok_and(|v| v.contains(BPF_LINKER_VERSION))
    };
    let llvm = llvm_lib(sysroot)?;
    let cached = machine_cache(root).join(format!("bpf-linker-{BPF_LINKER_VERSION}-{llvm}"));
    let cached_linker = cached.join("bin/bpf-linker");
    if !runs(&cached_linker) {
        build_bpf_linker(&cached, sysroot, &llvm)?;
    }
    fs::create_dir_all(tools.join("bin"))?;
    if fs::read_link(&linker).ok().as_deref() != Some(cached_linker.as_path()) {
        let _: Result<_, _> = fs::remove_file(&linker);
        symlink(&cached_linker, &linker)
            .with_context(|| format!("cannot link {}", linker.display()))?;
    }
    if !runs(&linker) {
        bail!("{} does not run", linker.display());
    }
    Ok(())
}

/// The nightly sysroot's libLLVM (`libLLVM.so.<major>.<minor>-rust-<version>`).
fn llvm_lib(sysroot: &Path) -> anyhow::Result<String> {
    let lib_dir = sysroot.join("lib");
    fs::read_dir(&lib_dir)
        .with_context(|| format!("cannot list {}", lib_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}", lib_dir.display()))
}

/// Builds bpf-linker into `tools` (its `bin/`), linked against `llvm` of `sysroot`.
fn build_bpf_linker(tools: &Path, sysroot: &Path, llvm: &str) -> anyhow::Result<()> {
    let linker = tools.join("bin/bpf-linker");
    // The nightly sysroot ships libLLVM.so.<major>.<minor>-rust-<version>; bpf-linker links it
    // dynamically when LLVM_PREFIX/lib holds it under its own name and as libLLVM.so.
    let lib_dir = sysroot.join("lib");
    let major = llvm
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .filter(|m| m.chars().all(|c| c.is_ascii_digit()))
        .with_context(|| format!("cannot read the LLVM version from {llvm}"))?
        .to_string();
    let prefix = tools.join("llvm");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)?;
    for name in ["libLLVM.so", llvm] {
        let link = prefix_lib.join(name);
        let _: Result<_, _> = fs::remove_file(&link);
        symlink(lib_dir.join(llvm), &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {llvm} into {} (a few minutes, once per machine)",
        tools.display()
    );
    let status = Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .arg("--root")
        .arg(tools)
        .env("LLVM_PREFIX", &prefix)
        .status()
        .context("cannot run cargo install")?;
    if !status.success() {
        bail!("cargo install bpf-linker failed ({status})");
    }
    output(Command::new(&linker).arg("--version"))
        .context("the freshly built bpf-linker does not run")?;
    Ok(())
}

/// Python packages the deploy tests use (`kubernetes-validate`, with PyYAML), installed into
/// `.tools/py` (nothing system-wide). The tests find them there.
pub fn ensure_python_deps(root: &Path) -> anyhow::Result<()> {
    let target = root.join(".tools/py");
    if target.join("kubernetes_validate").exists() && target.join("yaml").exists() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing kubernetes-validate into {}",
        target.display()
    );
    let ok = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(&target)
        .args(["kubernetes-validate==1.31.0", "PyYAML>=6"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        anyhow::bail!("cannot install kubernetes-validate with pip (python3 -m pip)");
    }
    Ok(())
}

/// The real lock library the lock-guard tests drive (`tests/node`: proper-lockfile, pinned with
/// its lock file), installed once into `.tools/node` with `npm ci`.
pub fn ensure_node_deps(root: &Path) -> anyhow::Result<()> {
    let src = root.join("tests/node");
    let target = root.join(".tools/node");
    let lock = fs::read(src.join("package-lock.json"))?;
    if fs::read(target.join("package-lock.json")).ok().as_ref() == Some(&lock)
        && target
            .join("node_modules/proper-lockfile/package.json")
            .exists()
    {
        return Ok(());
    }
    eprintln!(
        "xtask: installing the lock library (npm ci) into {}",
        target.display()
    );
    fs::create_dir_all(&target)?;
    for f in ["package.json", "package-lock.json"] {
        fs::copy(src.join(f), target.join(f))?;
    }
    let ok = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&target)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        anyhow::bail!(
            "cannot install the lock library with npm ci in {}",
            target.display()
        );
    }
    Ok(())
}
