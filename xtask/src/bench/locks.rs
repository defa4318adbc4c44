//! Lock-guard latency: from a failed heartbeat syscall (its kernel timestamp) to `/locks`
//! showing the lock as heartbeat-failing, over many trials. Each trial refreshes the lock
//! through a writable mount (healthy again), then through a read-only bind mount of the same
//! filesystem (EROFS), and polls `/locks?path=` until the state flips.

use std::{
    ffi::CString,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::harness::{Observer, http_get};

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    if !cmd.status()?.success() {
        bail!("{cmd:?} failed");
    }
    Ok(())
}

fn utimens(path: &Path) -> i32 {
    let p = CString::new(path.to_str().unwrap_or_default()).unwrap_or_default();
    unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), std::ptr::null(), 0) }
}

fn state(addr: &str, path: &Path) -> Option<Value> {
    let body = http_get(addr, &format!("/locks?path={}", path.display()))?;
    serde_json::from_str(&body).ok()
}

fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn lock_latency(observer: &Path, out_dir: &Path, trials: usize) -> anyhow::Result<Value> {
    let dir = tempfile::Builder::new()
        .prefix("fsobs-bench-locks-")
        .tempdir()?;
    let (rw, ro) = (dir.path().join("rw"), dir.path().join("ro"));
    std::fs::create_dir(&rw)?;
    std::fs::create_dir(&ro)?;
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "fsobs-bench"])
        .arg(&rw))?;
    let cleanup = scopeguard(vec![ro.clone(), rw.clone()]);
    run(Command::new("mount").arg("--bind").arg(&rw).arg(&ro))?;
    run(Command::new("mount")
        .args(["-o", "remount,bind,ro"])
        .arg(&ro))?;
    std::fs::write(rw.join("b.lock"), b"")?;
    let (ok_path, bad_path) = (rw.join("b.lock"), ro.join("b.lock"));
    let obs = Observer::start_with(
        observer,
        out_dir,
        &["--no-stdout", "--set", "locks.globs=[\"**/*.lock\"]"],
    )?;
    let mut lat = Vec::with_capacity(trials);
    for _ in 0..trials {
        let deadline = Instant::now() + Duration::from_secs(5);
        utimens(&ok_path);
        while state(&obs.addr, &ok_path).is_none_or(|v| v["state"] != "healthy") {
            if Instant::now() > deadline {
                bail!("the lock never became healthy");
            }
        }
        if utimens(&bad_path) == 0 {
            bail!("a refresh through the read-only mount succeeded");
        }
        let v = loop {
            if let Some(v) =
                state(&obs.addr, &ok_path).filter(|v| v["state"] == "heartbeat-failing")
            {
                break v;
            }
            if Instant::now() > deadline {
                bail!("the lock never became heartbeat-failing");
            }
        };
        let seen = now_unix_ns();
        let failed = v["lock"]["failing_since_unix_ns"]
            .as_u64()
            .context("failing_since")?;
        lat.push(seen.saturating_sub(failed) as f64 / 1e6);
    }
    obs.stop()?;
    drop(cleanup);
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let (p50, p99, max) = (pct(0.5), pct(0.99), lat[lat.len() - 1]);
    println!(
        "lock guard: failed heartbeat -> /locks heartbeat-failing over {trials} trials: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"
    );
    Ok(json!({"trials": trials, "p50_ms": p50, "p99_ms": p99, "max_ms": max}))
}

/// Unmounts `dirs` (in order) when dropped.
fn scopeguard(dirs: Vec<std::path::PathBuf>) -> impl Drop {
    struct Umount(Vec<std::path::PathBuf>);
    impl Drop for Umount {
        fn drop(&mut self) {
            for d in &self.0 {
                let _: Result<_, _> = Command::new("umount").arg("-l").arg(d).status();
            }
        }
    }
    Umount(dirs)
}
