//! Builds `observer-ebpf` for bpfel-unknown-none with aya-build and leaves the object at
//! `$OUT_DIR/observer`, embedded by `probes::object`. Without a BPF toolchain (no bpf-linker on
//! PATH) it writes an empty stub so `cargo check`, clippy and unit tests work anywhere; such a
//! binary refuses to start. `OBSERVER_REQUIRE_EBPF=1` (set by `cargo xtask`) turns the stub
//! into a build error. `OBSERVER_EBPF_OBJECT=FILE` (also set by `cargo xtask`, which builds the
//! object once per run with the same flags) embeds that object instead of building another.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-env-changed=OBSERVER_REQUIRE_EBPF");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?);
    let ebpf_dir = manifest_dir
        .parent()
        .context("observer has no parent directory")?
        .join("observer-ebpf");
    let require = env::var("OBSERVER_REQUIRE_EBPF").is_ok_and(|v| v == "1");
    println!("cargo:rerun-if-env-changed=OBSERVER_EBPF_OBJECT");
    if let Some(object) = env::var_os("OBSERVER_EBPF_OBJECT") {
        let object = PathBuf::from(object);
        println!("cargo:rerun-if-changed={}", object.display());
        let bytes = fs::read(&object).with_context(|| {
            format!("OBSERVER_EBPF_OBJECT={}: cannot read it", object.display())
        })?;
        if bytes.is_empty() {
            return Err(anyhow!(
                "OBSERVER_EBPF_OBJECT={} is empty",
                object.display()
            ));
        }
        fs::write(out_dir.join("observer"), bytes)?;
        return Ok(());
    }

    if which::which("bpf-linker").is_err() {
        if require {
            return Err(anyhow!(
                "OBSERVER_REQUIRE_EBPF=1 but bpf-linker is not on PATH (run `cargo xtask setup`)"
            ));
        }
        println!(
            "cargo:warning=bpf-linker not on PATH: embedding an empty stub eBPF object; this \
             observer binary will refuse to start (build it with `cargo xtask build`)"
        );
        println!("cargo:rerun-if-changed={}", ebpf_dir.display());
        // Tests that read the object are built ignored (with their reason) in such a build.
        println!("cargo:rustc-cfg=fsobs_stub_object");
        fs::write(out_dir.join("observer"), [])?;
        return Ok(());
    }
    let root_dir = ebpf_dir
        .to_str()
        .context("non-UTF-8 path to observer-ebpf")?;
    aya_build::build_ebpf(
        [Package {
            name: "observer-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::Nightly,
    )
}
