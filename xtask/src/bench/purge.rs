//! Purge cost: a tree of many small files, aged past the policy's TTL, purged through the API
//! while `/healthz` is probed every 10 ms. Reported: time until the run answered (scan, re-check,
//! rename into the trash: the entries are gone from their place), time until the background
//! removal emptied the trash, files removed per second, and the same tree removed by a plain
//! `remove_dir_all` (no observer) for the ratio.

use std::{
    path::Path,
    process::Command,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::harness::{Observer, healthz_latencies, http};

fn make_tree(dir: &Path, trees: usize, files: usize) -> anyhow::Result<()> {
    for t in 0..trees {
        let d = dir.join(format!("w/tree-{t}"));
        std::fs::create_dir_all(&d)?;
        for i in 0..files {
            std::fs::File::create(d.join(format!("f{i}")))?;
        }
    }
    // Two days old, so the policy's one-hour TTL passes.
    let status = Command::new("find")
        .arg(dir)
        .args(["-exec", "touch", "-h", "-d", "2 days ago", "{}", "+"])
        .status()?;
    if !status.success() {
        bail!("aging the tree failed");
    }
    Ok(())
}

pub fn purge_cost(
    observer: &Path,
    out_dir: &Path,
    trees: usize,
    files: usize,
) -> anyhow::Result<Value> {
    let dir = tempfile::Builder::new()
        .prefix("fsobs-bench-purge-")
        .tempdir()?;
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt)?;
    let status = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=2g,nr_inodes=4000000",
            "fsobs-bench",
        ])
        .arg(&mnt)
        .status()?;
    if !status.success() {
        bail!("mount tmpfs failed");
    }
    struct Umount<'a>(&'a Path);
    impl Drop for Umount<'_> {
        fn drop(&mut self) {
            let _: Result<_, _> = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _umount = Umount(&mnt);
    let total = (trees * files) as f64;

    // Without the observer: the same tree, removed in place.
    let plain = mnt.join("plain");
    make_tree(&plain, trees, files)?;
    let t0 = Instant::now();
    std::fs::remove_dir_all(plain.join("w"))?;
    let plain_secs = t0.elapsed().as_secs_f64();

    let root = mnt.join("root");
    make_tree(&root, trees, files)?;
    let cfg = out_dir.join(format!("purge-bench-{}.toml", std::process::id()));
    std::fs::write(
        &cfg,
        format!(
            "[purge]\nenabled = true\n[[purge.policies]]\nname = \"bench\"\nroot = \"{}\"\n\
             match = [\"w/*\"]\nmin_age_secs = 3600\nmax_items = 100000\nexecute = true\nmanual_execute = true\n",
            root.display()
        ),
    )?;
    let obs = Observer::start_with(
        observer,
        out_dir,
        &["--no-stdout", "--config", cfg.to_str().unwrap_or_default()],
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (stop, addr) = (stop.clone(), obs.addr.clone());
        std::thread::spawn(move || healthz_latencies(&addr, &stop))
    };
    let t0 = Instant::now();
    let body =
        http("POST", &obs.addr, "/purge?policy=bench&execute=true").context("POST /purge")?;
    let answered = t0.elapsed().as_secs_f64();
    let report: Value =
        serde_json::from_str(&body).with_context(|| format!("purge report: {body}"))?;
    let deleted = report["runs"][0]["deleted"].as_u64().unwrap_or(0);
    if deleted != trees as u64 {
        bail!("purge deleted {deleted} of {trees} trees: {body}");
    }
    let trash = root.join(".fsobserver-trash");
    while std::fs::read_dir(&trash).map(|d| d.count()).unwrap_or(0) > 0 {
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("the trash was not emptied within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let removed = t0.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut lat = prober
        .join()
        .map_err(|_| anyhow::anyhow!("prober panicked"))?;
    obs.stop()?;
    let _: Result<_, _> = std::fs::remove_file(&cfg);
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let v = json!({
        "files": total,
        "trees": trees,
        "run_answered_secs": answered,
        "trash_emptied_secs": removed,
        "files_removed_per_s": total / removed,
        "plain_remove_dir_all_secs": plain_secs,
        "ratio_vs_plain": removed / plain_secs,
        "healthz_probes": lat.len(),
        "healthz_p50_ms": pct(0.5),
        "healthz_p99_ms": pct(0.99),
        "healthz_max_ms": lat.last().copied().unwrap_or(f64::NAN),
    });
    println!(
        "purge: {total} files in {trees} trees: run answered in {answered:.2} s (scan, re-check, move to trash), trash emptied after {removed:.2} s ({:.0} files/s; plain remove_dir_all {plain_secs:.2} s, ratio {:.2}); /healthz p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} probes",
        total / removed,
        removed / plain_secs,
        pct(0.5),
        pct(0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        lat.len()
    );
    Ok(v)
}
