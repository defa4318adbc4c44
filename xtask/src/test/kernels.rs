//! Test kernels from Debian's packages, downloaded with apt and cached in the machine cache
//! (`kernels/`, see `toolchain::machine_cache`): once per machine, not per clone.
//!
//! `6.1` and `6.12` come from the machine's own (bookworm) sources; `5.10` from bullseye, read
//! through a private apt configuration derived at run time from the machine's own sources (the
//! same mirrors, suite names swapped), so the system's apt setup is never changed.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::toolchain::output as run;

/// A kernel to boot.
pub struct Kernel {
    /// Short label (`6.1`, `6.12`, `5.10` or a file name).
    pub label: String,
    /// Debian package (or the path given).
    pub package: String,
    pub vmlinuz: PathBuf,
}

/// Extra apt options selecting a private configuration (empty for the system's).
struct Apt {
    opts: Vec<String>,
}

impl Apt {
    fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.args(&self.opts);
        c
    }

    fn system() -> Apt {
        Apt { opts: Vec::new() }
    }

    /// Bullseye lists in `dir`, from the system's bookworm sources.
    fn bullseye(cache: &Path) -> anyhow::Result<Apt> {
        let dir = &cache.join("apt-bullseye");
        let uris = system_debian_uris()?;
        fs::create_dir_all(dir.join("lists/partial"))?;
        fs::create_dir_all(dir.join("cache/archives/partial"))?;
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let mut list = String::new();
        for (uri, suite) in uris {
            // Only Debian's own suites (`bookworm`, `bookworm-updates`, `bookworm-security`), not
            // third-party repositories that merely carry the codename.
            if suite == "bookworm" || suite.starts_with("bookworm-") {
                let old = suite.replacen("bookworm", "bullseye", 1);
                list.push_str(&format!("deb [signed-by={keyring}] {uri} {old} main\n"));
            }
        }
        if list.is_empty() {
            bail!("no bookworm suites in the system's apt sources to derive bullseye sources from");
        }
        let sources = dir.join("sources.list");
        fs::write(&sources, list)?;
        let d = |p: &str| dir.join(p).display().to_string();
        let apt = Apt {
            opts: vec![
                "-o".into(),
                format!("Dir::Etc::SourceList={}", sources.display()),
                "-o".into(),
                "Dir::Etc::SourceParts=/nonexistent".into(),
                "-o".into(),
                format!("Dir::State::Lists={}", d("lists")),
                "-o".into(),
                format!("Dir::Cache={}", d("cache")),
            ],
        };
        if !has_package_lists(&dir.join("lists"))? {
            eprintln!("xtask: fetching bullseye package lists (for the 5.10 kernel)");
            run(apt.cmd("apt-get").arg("update").arg("-qq"))?;
            if !has_package_lists(&dir.join("lists"))? {
                bail!("apt-get update fetched no bullseye package lists (see its warnings above)");
            }
        }
        Ok(apt)
    }
}

fn has_package_lists(dir: &Path) -> anyhow::Result<bool> {
    Ok(fs::read_dir(dir)?
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().contains("_Packages")))
}

/// `(uri, suite)` pairs of the system's Debian sources (deb822 `.sources` and one-line lists).
fn system_debian_uris() -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.filter_map(Result::ok).map(|e| e.path()));
    }
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            };
            if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:")) {
                for u in uris.split_whitespace() {
                    for s in suites.split_whitespace() {
                        out.push((u.to_string(), s.to_string()));
                    }
                }
            }
        }
        for line in text.lines() {
            let words: Vec<&str> = line
                .split_whitespace()
                .filter(|w| !w.starts_with('['))
                .collect();
            if words.len() >= 3 && words[0] == "deb" {
                out.push((words[1].to_string(), words[2].to_string()));
            }
        }
    }
    Ok(out)
}

/// Newest package whose name matches `pattern` (an apt-cache regex).
fn newest(apt: &Apt, pattern: &str) -> anyhow::Result<Option<String>> {
    let list = run(apt
        .cmd("apt-cache")
        .args(["search", "--names-only", pattern]))?;
    let mut names: Vec<String> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    names.sort_by_key(|n| version_key(n));
    Ok(names.pop())
}

fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Resolves `spec` (`5.10`, `6.1`, `6.12` or a path to a bzImage/vmlinuz) to a bootable kernel.
pub fn fetch(cache: &Path, spec: &str) -> anyhow::Result<Kernel> {
    let as_path = Path::new(spec);
    if as_path.is_file() {
        return Ok(Kernel {
            label: spec.into(),
            package: spec.into(),
            vmlinuz: as_path.to_path_buf(),
        });
    }
    let (apt, pattern) = match spec {
        "5.10" => (
            Apt::bullseye(cache)?,
            r"^linux-image-5\.10\.0-[0-9]+-amd64$",
        ),
        "6.1" => (Apt::system(), r"^linux-image-6\.1\.0-[0-9]+-amd64$"),
        "6.12" => (Apt::system(), r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$"),
        other => bail!("unknown kernel {other:?}: use 5.10, 6.1, 6.12 or a path to a kernel image"),
    };
    let mut package = newest(&apt, pattern)?;
    if package.is_none() && apt.opts.is_empty() {
        eprintln!("xtask: apt-get update (no {spec} kernel package listed)");
        run(apt.cmd("apt-get").args(["update", "-qq"]))?;
        package = newest(&apt, pattern)?;
    }
    let package = package.with_context(|| format!("no Debian package matches {pattern}"))?;
    let dir = cache.join("kernels");
    fs::create_dir_all(&dir)?;
    let vmlinuz = dir.join(format!("vmlinuz-{package}"));
    if !vmlinuz.exists() {
        eprintln!("xtask: downloading {package}");
        run(apt
            .cmd("apt-get")
            .current_dir(&dir)
            .args(["download", "-qq", &package]))?;
        let deb = fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(&format!("{package}_")) && n.ends_with(".deb")
                })
            })
            .with_context(|| format!("apt-get download left no {package}_*.deb"))?;
        let tmp = tempfile::tempdir()?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(tmp.path()))?;
        let boot = tmp.path().join("boot");
        let image = fs::read_dir(&boot)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
            .with_context(|| format!("{package} has no boot/vmlinuz-*"))?;
        fs::copy(&image, &vmlinuz)?;
        fs::remove_file(&deb)?;
    }
    Ok(Kernel {
        label: spec.into(),
        package,
        vmlinuz,
    })
}
