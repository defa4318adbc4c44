//! `cargo xtask image`: the observer's container image, built offline from what `cargo xtask
//! build` produced — no registry, no base image. The root filesystem holds the observer at the
//! path `deploy/Dockerfile` copies it to, the shared libraries it links (`ldd`), and empty mount
//! points; the image's user, entrypoint and command are the Dockerfile's own lines, so the two
//! agree by construction. podman imports it into a store of its own under `target/image` (vfs:
//! no mounts) and saves a docker-archive that `podman load` and `docker load` accept.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The image's name and tag.
pub fn reference() -> String {
    format!("localhost/fsobserver:{}", env!("CARGO_PKG_VERSION"))
}

/// What the Dockerfile's final stage says about the runtime image.
#[derive(Debug, PartialEq, Eq)]
pub struct Runtime {
    /// Where the observer is copied to.
    pub binary: String,
    /// Its `USER`, `ENTRYPOINT` and `CMD` lines, verbatim.
    pub config: Vec<String>,
}

/// Reads the final stage of `deploy/Dockerfile`.
pub fn dockerfile_runtime(root: &Path) -> anyhow::Result<Runtime> {
    let text = std::fs::read_to_string(root.join("deploy/Dockerfile"))?;
    let stage = text
        .rsplit_once("\nFROM ")
        .map(|(_, s)| s)
        .context("deploy/Dockerfile has no FROM")?;
    let mut binary = None;
    let mut config = Vec::new();
    for line in stage.lines().map(str::trim) {
        if line.starts_with("COPY ") && line.contains("/observer") {
            binary = line.split_whitespace().last().map(str::to_string);
        }
        if ["USER ", "ENTRYPOINT ", "CMD "]
            .iter()
            .any(|k| line.starts_with(k))
        {
            config.push(line.to_string());
        }
    }
    Ok(Runtime {
        binary: binary.context("deploy/Dockerfile's last stage copies no observer")?,
        config,
    })
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Builds the image from `observer` and returns the docker-archive's path
/// (`target/image/fsobserver-VERSION.tar`).
pub fn build(root: &Path, observer: &Path) -> anyhow::Result<PathBuf> {
    let rt = dockerfile_runtime(root)?;
    let out = root.join("target/image");
    let rootfs = out.join("rootfs");
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs)?;
    }
    let rel = |p: &str| rootfs.join(p.trim_start_matches('/'));
    // Mount points of the DaemonSets and of any runtime (a read-only root cannot grow them).
    for d in [
        "proc",
        "sys",
        "dev",
        "tmp",
        "run/fsobserver",
        "etc/fsobserver",
        "host",
        "var/lib/fsobserver/dumps",
    ] {
        std::fs::create_dir_all(rel(d))?;
    }
    let bin = rel(&rt.binary);
    std::fs::create_dir_all(bin.parent().context("binary path")?)?;
    std::fs::copy(observer, &bin).with_context(|| format!("copy {}", observer.display()))?;
    let ldd = Command::new("ldd").arg(observer).output()?;
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = rel(lib);
        std::fs::create_dir_all(to.parent().context("library path")?)?;
        std::fs::copy(lib, &to).with_context(|| format!("copy {lib}"))?;
    }
    let tar = out.join("rootfs.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["--owner=0", "--group=0", "--numeric-owner", "-cf"])
        .arg(&tar)
        .arg("."))?;
    let store = out.join("store");
    let podman = || {
        let mut c = Command::new("podman");
        // Layers are staged under TMPDIR (/var/tmp otherwise).
        c.env("TMPDIR", &store);
        c.arg("--root")
            .arg(store.join("root"))
            .arg("--runroot")
            .arg(store.join("run"))
            .arg("--tmpdir")
            .arg(store.join("tmp"))
            .args(["--storage-driver", "vfs", "--events-backend", "none"]);
        c
    };
    let reference = reference();
    let mut import = podman();
    import.arg("import");
    for line in &rt.config {
        import.arg("--change").arg(line);
    }
    run(import.arg(&tar).arg(&reference))?;
    let archive = out.join(format!("fsobserver-{}.tar", env!("CARGO_PKG_VERSION")));
    let _: Result<_, _> = std::fs::remove_file(&archive);
    run(podman()
        .args(["save", "--format", "docker-archive", "-o"])
        .arg(&archive)
        .arg(&reference))?;
    std::fs::remove_dir_all(&store)?;
    std::fs::remove_file(&tar)?;
    Ok(archive)
}
