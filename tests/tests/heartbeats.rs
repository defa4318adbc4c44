//! Lock heartbeats as the kernel sees them: every utimes-family call, success and failure
//! (EROFS, EPERM, ENOENT), and writes to configured heartbeat files — one record per refresh,
//! counted exactly per filesystem. A success that restores explicit old times (tar, `cp -a`)
//! is counted and never sent; a process refreshing one name in a loop sends one record per
//! 50 ms.

use std::os::unix::process::CommandExt as _;

use integration_tests::*;

fn syscall_event(v: &Value, pid: u64, syscall: &str, errno: u64) -> bool {
    v["type"] == "syscall" && v["pid"] == pid && v["syscall"] == syscall && v["errno"] == errno
}

#[test]
fn heartbeats_are_reported_on_success_and_on_each_failure() {
    let mnt = Mount::tmpfs("size=1M,mode=0755");
    let lock = mnt.path("job.lock");
    std::fs::write(&lock, b"holder").unwrap();
    let ro = Mount::bind_readonly(&mnt.dir);
    let ro_lock = ro.path("job.lock");
    let mut obs = Observer::shared(&[]);
    // Names relative to the working directory: the kernel resolves their filesystem, so the
    // failure counts below are this filesystem's alone (exact, whatever else runs) — counted
    // from now: the shared observer may hold counts of an earlier filesystem, since unmounted,
    // that had the same device number.
    let dev = mount_dev(&mnt.dir);
    let before = obs.stats();
    let counted_before = |errno| error_count_on(&before, "utimensat", errno, &dev);
    let ok = workload_in(&mnt.dir, &["utimens", "job.lock", "now"]);
    assert_eq!(ok.get("errno"), "0");
    let ev = obs.wait_for("successful heartbeat", |v| {
        syscall_event(v, ok.pid(), "utimensat", 0)
    });
    assert_eq!(ev["kind"], "heartbeat");
    assert_eq!(ev["path"], lock.as_str());

    let fd_ok = workload(&["futimens", &lock]);
    assert_eq!(fd_ok.get("errno"), "0");
    let ev = obs.wait_for("futimens heartbeat", |v| {
        syscall_event(v, fd_ok.pid(), "utimensat", 0)
    });
    assert_eq!(
        ev["path"],
        lock.as_str(),
        "fd form resolved to the file: {ev}"
    );

    let erofs = workload_in(&ro.dir, &["utimens", "job.lock", "now"]);
    assert_eq!(erofs.get("errno"), "30");
    let ev = obs.wait_for("EROFS heartbeat", |v| {
        syscall_event(v, erofs.pid(), "utimensat", 30)
    });
    assert_eq!(
        (ev["path"].as_str(), ev["errno_name"].as_str()),
        (Some(ro_lock.as_str()), Some("EROFS"))
    );

    // Explicit times on a file owned by another uid, as an unprivileged uid: EPERM.
    let out = output_within(
        workload_cmd(&["utimens", "job.lock", "explicit"])
            .current_dir(&mnt.dir)
            .uid(65534)
            .gid(65534),
        CHILD_TIMEOUT,
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("errno=1"), "{text}");
    let pid: u64 = text
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("pid="))
        .unwrap()
        .parse()
        .unwrap();
    let ev = obs.wait_for("EPERM heartbeat", |v| syscall_event(v, pid, "utimensat", 1));
    assert_eq!(
        (ev["uid"].as_u64(), ev["path"].as_str()),
        (Some(65534), Some(lock.as_str()))
    );

    std::fs::remove_file(&lock).unwrap();
    let enoent = workload_in(&mnt.dir, &["utimens", "job.lock", "now"]);
    assert_eq!(enoent.get("errno"), "2");
    let ev = obs.wait_for("ENOENT heartbeat", |v| {
        syscall_event(v, enoent.pid(), "utimensat", 2)
    });
    assert_eq!(ev["path"], lock.as_str());

    let lines = obs.barrier().to_vec();
    // One record per call, from each caller.
    for (p, errno) in [
        (ok.pid(), 0),
        (fd_ok.pid(), 0),
        (erofs.pid(), 30),
        (pid, 1),
        (enoent.pid(), 2),
    ] {
        let n = lines
            .iter()
            .filter(|v| v["pid"] == p && v["kind"] == "heartbeat")
            .count();
        assert_eq!(n, 1, "pid {p}: {n} heartbeat records");
        assert!(
            lines
                .iter()
                .any(|v| syscall_event(v, p, "utimensat", errno))
        );
    }
    let stats = obs.stats();
    for errno in [1, 2, 30] {
        assert_eq!(
            error_count_on(&stats, "utimensat", errno, &dev),
            counted_before(errno) + 1,
            "utimensat errno {errno} counted once: {stats}"
        );
    }
    // Machine-wide counters: other processes on the host may refresh files meanwhile.
    assert!(stats["heartbeats_ok"].as_u64().unwrap() >= 2, "{stats}");
    assert!(stats["heartbeats_failed"].as_u64().unwrap() >= 3, "{stats}");
}

#[test]
fn writes_to_configured_heartbeat_files_are_heartbeats() {
    let mnt = Mount::tmpfs("size=64k");
    let lock = mnt.path("job.lock");
    let other = mnt.path("data");
    std::fs::write(&lock, b"").unwrap();
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("observer.toml");
    std::fs::write(&cfg, format!("[heartbeats]\nfiles = [{lock:?}]\n")).unwrap();
    // Its own filesystem only: the ring-drop count below is then this test's alone.
    let mut obs = Observer::start(&[
        "--config",
        cfg.to_str().unwrap(),
        "--watch-mount",
        mnt.dir.to_str().unwrap(),
    ]);
    let beat = workload(&["write-ok", &lock, "3"]);
    let ev = obs.wait_for("write heartbeat", |v| {
        v["kind"] == "heartbeat" && v["pid"] == beat.pid() && v["errno"] == 0
    });
    assert_eq!(
        (ev["syscall"].as_str(), ev["path"].as_str()),
        (Some("pwrite64"), Some(lock.as_str()))
    );
    let plain = workload(&["write-ok", &other, "3"]);
    assert_eq!(plain.get("errno"), "0");
    // The heartbeat file on a full filesystem: a failed heartbeat.
    let fail = workload(&["fill", &lock]);
    assert_eq!(fail.get("errno"), "28");
    let ev = obs.wait_for("failed write heartbeat", |v| {
        v["kind"] == "heartbeat" && v["pid"] == fail.pid() && v["errno"] == 28
    });
    assert_eq!(ev["path"], lock.as_str());
    let lines = obs.stop();
    assert!(
        !lines.iter().any(|v| v["pid"] == plain.pid()),
        "writes to other files are not heartbeats"
    );
    // Every write to the heartbeat file is one heartbeat record: 3, then the filler's
    // successful writes and its one failure.
    let beats = |pid: u64, errno: u64| {
        lines
            .iter()
            .filter(|v| v["kind"] == "heartbeat" && v["pid"] == pid && v["errno"] == errno)
            .count()
    };
    assert_eq!(beats(beat.pid(), 0), 3);
    assert_eq!(beats(fail.pid(), 0).to_string(), fail.get("writes"));
    assert_eq!(beats(fail.pid(), 28), 1);
    let stats = final_stats(&lines);
    assert_eq!(stats["kernel_ring_drops"], 0, "{stats}");
    // Machine-wide counters: other processes on the host may refresh files meanwhile.
    assert!(stats["heartbeats_ok"].as_u64().unwrap() >= 3, "{stats}");
    assert!(stats["heartbeats_failed"].as_u64().unwrap() >= 1, "{stats}");
}

/// The counter `key` of `/stats` (0 when absent).
fn counter(stats: &Value, key: &str) -> u64 {
    stats[key].as_u64().unwrap_or(0)
}

#[test]
fn restored_times_are_counted_exactly_and_never_sent() {
    const N: u64 = 100_000;
    let mnt = Mount::tmpfs("size=1M");
    std::fs::write(mnt.path("stamp"), b"").unwrap();
    let mut obs = Observer::shared(&[]);
    let before = obs.stats();
    // Explicit times a day back, the way tar and cp -a set them, on a name no lock has.
    let old = workload_in(&mnt.dir, &["bench-utimens", "stamp", &N.to_string(), "old"]);
    let lines = obs.barrier().to_vec();
    let after = obs.stats();
    let sent = lines.iter().filter(|v| v["pid"] == old.pid()).count();
    assert_eq!(sent, 0, "restored times sent as records: {sent}");
    // Machine-wide counters (another process on the host may call utimensat meanwhile): at
    // least every call of ours, and as restored times.
    let delta = |k: &str| counter(&after, k) - counter(&before, k);
    assert!(delta("heartbeats_times_set") >= N, "{before}\n{after}");
    assert!(delta("heartbeats_ok") >= N, "{before}\n{after}");
    // The same file touched to now in a loop: refreshes, one record per 50 ms per CPU; the
    // rest counted as coalesced.
    let now = workload_in(&mnt.dir, &["bench-utimens", "stamp", &N.to_string()]);
    let lines = obs.barrier().to_vec();
    let after_now = obs.stats();
    let sent = lines
        .iter()
        .filter(|v| v["pid"] == now.pid() && v["kind"] == "heartbeat")
        .count() as u64;
    let elapsed_ms: f64 = now.get("elapsed_ns").parse::<f64>().unwrap() / 1e6;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let bound = (elapsed_ms / 50.0).ceil() as u64 * cpus + cpus;
    assert!(
        (1..=bound).contains(&sent),
        "{sent} records for {N} refreshes in {elapsed_ms:.0} ms (bound {bound})"
    );
    let delta = |k: &str| counter(&after_now, k) - counter(&after, k);
    assert!(
        delta("heartbeats_coalesced") >= N - sent,
        "{after}\n{after_now}"
    );
    assert!(delta("heartbeats_ok") >= N, "{after}\n{after_now}");
}
