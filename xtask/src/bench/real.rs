//! Real workloads, timed as whole processes (ms): `tar x`, `cp -a`, `rm -rf`, `git worktree add`
//! and `git checkout` of generated trees on the bench's tmpfs. The trees are made once, before
//! the rounds, with times one day old — as a downloaded archive's or an earlier checkout's are
//! (a tree written seconds before it is copied makes `cp -a` and `tar x` restore times within
//! the observer's refresh window, which it then reports as refreshes).

use std::{
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use super::{RunFn, Workload, harness::Scratch};

/// Files in the tar/cp/checkout tree (300 directories of 100).
const TREE_DIRS: usize = 300;
const TREE_FILES_PER_DIR: usize = 100;
/// Files in the `git worktree add` repository.
const WORKTREE_FILES: usize = 3000;

/// Makes the fixtures and returns the real-workload rows.
pub fn workloads(s: &Scratch) -> anyhow::Result<Vec<Workload>> {
    let root = PathBuf::from(s.path("fast/real"));
    let _: Result<_, _> = fs::remove_dir_all(&root);
    fs::create_dir_all(&root)?;
    let tree = root.join("tree");
    make_tree(&tree, TREE_DIRS, TREE_FILES_PER_DIR)?;
    let tar = root.join("tree.tar");
    sh(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&tree)
        .arg("."))?;
    let small = root.join("repo3k");
    make_tree(&small, 30, WORKTREE_FILES / 30)?;
    git(&small, &["init", "-q", "-b", "main"])?;
    git(&small, &["add", "-A"])?;
    git(&small, &["commit", "-q", "-m", "tree"])?;
    let big = root.join("repo30k");
    fs::create_dir_all(&big)?;
    git(&big, &["init", "-q", "-b", "empty"])?;
    fs::write(big.join("README"), "empty\n")?;
    git(&big, &["add", "-A"])?;
    git(&big, &["commit", "-q", "-m", "empty"])?;
    git(&big, &["checkout", "-q", "-b", "big"])?;
    sh(Command::new("cp").arg("-a").arg(tree.join(".")).arg(&big))?;
    git(&big, &["add", "-A"])?;
    git(&big, &["commit", "-q", "-m", "tree"])?;
    git(&big, &["checkout", "-q", "empty"])?;

    let n = TREE_DIRS * TREE_FILES_PER_DIR;
    let out = root.join("out");
    let rows: Vec<(String, RunFn)> = vec![
        (format!("tar x {}k files (ms)", n / 1000), {
            let (tar, out) = (tar.clone(), out.clone());
            Box::new(move |_: &Path, _: &Scratch| {
                fresh(&out)?;
                timed(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&out))
            })
        }),
        (format!("cp -a {}k files (ms)", n / 1000), {
            let (tree, out) = (tree.clone(), out.clone());
            Box::new(move |_: &Path, _: &Scratch| {
                remove(&out)?;
                timed(Command::new("cp").arg("-a").arg(&tree).arg(&out))
            })
        }),
        (format!("rm -rf {}k files (ms)", 2 * n / 1000), {
            let (tree, out) = (tree.clone(), out.clone());
            Box::new(move |_: &Path, _: &Scratch| {
                fresh(&out)?;
                for copy in ["a", "b"] {
                    sh(Command::new("cp").arg("-a").arg(&tree).arg(out.join(copy)))?;
                }
                timed(Command::new("rm").arg("-rf").arg(&out))
            })
        }),
        (
            format!("git worktree add {}k files (ms)", WORKTREE_FILES / 1000),
            {
                let (repo, out) = (small.clone(), out.clone());
                Box::new(move |_: &Path, _: &Scratch| {
                    remove(&out)?;
                    git(&repo, &["worktree", "prune"])?;
                    let t = timed(
                        git_cmd(&repo)
                            .args(["worktree", "add", "-q", "--detach"])
                            .arg(&out)
                            .arg("HEAD"),
                    );
                    remove(&out)?;
                    git(&repo, &["worktree", "prune"])?;
                    t
                })
            },
        ),
        (format!("git checkout {}k files (ms)", n / 1000), {
            let repo = big.clone();
            Box::new(move |_: &Path, _: &Scratch| {
                git(&repo, &["checkout", "-q", "-f", "empty"])?;
                timed(git_cmd(&repo).args(["checkout", "-q", "big"]))
            })
        }),
    ];
    Ok(rows
        .into_iter()
        .map(|(name, run)| Workload { name, run })
        .collect())
}

/// `dirs` directories of `per_dir` files (64 B to 4 KiB), everything one day old.
fn make_tree(root: &Path, dirs: usize, per_dir: usize) -> anyhow::Result<()> {
    let body = vec![b'x'; 4096];
    for d in 0..dirs {
        let dir = root.join(format!("d{d:03}"));
        fs::create_dir_all(&dir)?;
        for f in 0..per_dir {
            let len = 64 + (d * 131 + f * 71) % (4096 - 64);
            let file = dir.join(format!("f{f:03}.txt"));
            fs::write(&file, &body[..len])?;
            age(&file)?;
        }
        age(&dir)?;
    }
    age(root)
}

/// Sets a path's times one day back.
fn age(path: &Path) -> anyhow::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime and utimensat with valid pointers.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let t = libc::timespec {
        tv_sec: now.tv_sec - 86_400,
        tv_nsec: 0,
    };
    let times = [t, t];
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) } != 0 {
        bail!(
            "cannot set the times of {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn git_cmd(repo: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C")
        .arg(repo)
        .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
        .args(["-c", "gc.auto=0", "-c", "core.fsmonitor=false"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    c
}

fn git(repo: &Path, args: &[&str]) -> anyhow::Result<()> {
    sh(git_cmd(repo).args(args))
}

fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let st = cmd
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

/// Runs `cmd` and returns its wall time in ms.
fn timed(cmd: &mut Command) -> anyhow::Result<f64> {
    let t = Instant::now();
    sh(cmd)?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

fn remove(dir: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}

fn fresh(dir: &Path) -> anyhow::Result<()> {
    remove(dir)?;
    fs::create_dir_all(dir)?;
    Ok(())
}
