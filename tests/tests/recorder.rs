//! The flight recorder on the real kernel: burst dumps with the window before the trigger,
//! `observer dump` and `observer replay`, and surviving the dump directory's own ENOSPC.

use std::time::Duration;

use integration_tests::{Mount, Observer, daemon::*, observer_cmd, workload};

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: userspace behaviour, the same on every kernel"
)]
fn burst_dump_holds_the_window_before_the_trigger_and_replays() {
    let a = Mount::tmpfs("size=64k");
    let dumps = Mount::tmpfs("size=8m");
    let dump_dir = format!("recorder.dump_dir={}", dumps.dir.display());
    let obs = Observer::start(&[
        "--watch-mount",
        a.dir.to_str().unwrap(),
        "--set",
        &dump_dir,
        "--set",
        "recorder.burst_errors=50",
    ]);
    // A trickle first (below the burst threshold), then the burst in a later second.
    let (early_pid, early) = storm(&a.dir, "f", 20);
    std::thread::sleep(Duration::from_millis(1100));
    let late = workload(&["fail-writes", a.dir.join("f").to_str().unwrap(), "300"]);
    let total = early + 300;

    let burst = wait_for_file(&dumps.dir);
    let (header, lines) = read_dump(&burst);
    assert_eq!(header["reason"], "burst");
    assert_eq!(header["trigger"]["errno"], "ENOSPC", "{header}");
    assert!(header["losses"]["kernel_ring_drops"].is_u64(), "{header}");
    assert!(
        header["losses"]["userspace_queue_drops"].is_u64(),
        "{header}"
    );
    let trigger_ns = header["trigger"]["time_unix_ns"].as_u64().unwrap();
    let before: Vec<_> = enospc_events(&lines)
        .into_iter()
        .filter(|v| v["time_unix_ns"].as_u64().unwrap() <= trigger_ns)
        .collect();
    assert_eq!(
        before.iter().filter(|v| v["pid"] == early_pid).count() as u64,
        20,
        "the pre-trigger trickle is in the burst dump"
    );
    assert!(before.iter().filter(|v| v["pid"] == late.pid()).count() >= 50);

    obs.wait_metric(&errors_series("write", "ENOSPC", &a.dir), |v| {
        v == total as f64
    });
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("dump.jsonl");
    let o = observer_cmd(&[
        "dump",
        "--addr",
        obs.addr(),
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (header, lines) = read_dump(&file);
    assert_eq!(header["reason"], "request");
    assert_eq!(header["probe_mode"], integration_tests::expected_mode());
    assert_eq!(
        enospc_events(&lines).len() as u64,
        total,
        "every failure is in the window"
    );
    assert!(
        lines.iter().any(|v| v["type"] == "snapshot"),
        "per-second snapshots"
    );

    let r = observer_cmd(&["replay", file.to_str().unwrap()]);
    assert!(r.status.success());
    let text = String::from_utf8_lossy(&r.stdout);
    assert_eq!(
        text.lines().filter(|l| l.contains("ENOSPC")).count() as u64,
        total
    );
    assert!(String::from_utf8_lossy(&r.stderr).contains("kernel_ring_drops"));
    let r = observer_cmd(&[
        "replay",
        file.to_str().unwrap(),
        "--json",
        "--pid",
        &early_pid.to_string(),
    ]);
    let picked = String::from_utf8_lossy(&r.stdout)
        .lines()
        .filter(|l| l.contains("\"type\":\"syscall\""))
        .count();
    assert_eq!(picked, 20, "replay filters by pid");
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: userspace behaviour, the same on every kernel"
)]
fn a_full_dump_directory_is_counted_survived_and_recovered() {
    let a = Mount::tmpfs("size=64k");
    let dumps = Mount::tmpfs("size=64k");
    let filler = dumps.dir.join("filler");
    workload(&["fill", filler.to_str().unwrap()]);
    let obs = Observer::start(&[
        "--watch-mount",
        a.dir.to_str().unwrap(),
        "--set",
        &format!("recorder.dump_dir={}", dumps.dir.display()),
        "--set",
        "recorder.burst_errors=10",
        "--set",
        "recorder.burst_cooldown_secs=1",
        "--set",
        "recorder.max_events=30",
    ]);
    storm(&a.dir, "f", 100);
    obs.wait_metric("fsobserver_dumps_total{result=\"failed\"}", |v| v >= 1.0);
    assert_eq!(obs.http("/healthz"), (200, "ok\n".to_string()));
    assert!(
        obs.stderr().contains("cannot write a burst dump"),
        "{}",
        obs.stderr()
    );
    assert_eq!(
        std::fs::read_dir(&dumps.dir).unwrap().count(),
        1,
        "a failed dump leaves nothing behind"
    );

    std::fs::remove_file(&filler).unwrap();
    std::thread::sleep(Duration::from_millis(1200)); // the cooldown
    workload(&["fail-writes", a.dir.join("f").to_str().unwrap(), "100"]);
    obs.wait_metric("fsobserver_dumps_total{result=\"written\"}", |v| v >= 1.0);
    let (header, _) = read_dump(&wait_for_file(&dumps.dir));
    assert_eq!(header["reason"], "burst");
    assert_eq!(
        obs.stderr().matches("cannot write a burst dump").count(),
        1,
        "logged once"
    );
}

/// A node's `rm -rf` reported deletion by deletion (every deletion is, while a lock is held)
/// cannot push the failures out of the flight recorder: each kind keeps half of the window.
#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: userspace behaviour, the same on every kernel"
)]
fn a_flood_of_reported_deletions_leaves_the_failures_in_the_window() {
    let a = Mount::tmpfs("size=256k");
    let obs = Observer::start(&[
        "--watch-mount",
        a.dir.to_str().unwrap(),
        "--set",
        "probes.delete_sample=1",
        "--set",
        "recorder.max_events=100",
    ]);
    let (_, failures) = storm(&a.dir, "f", 5);
    obs.wait_metric(&errors_series("write", "ENOSPC", &a.dir), |v| {
        v == failures as f64
    });
    // Then 1,000 files and their directory removed: 1,001 deletion events after the failures.
    let many = a.dir.join("many");
    std::fs::create_dir(&many).unwrap();
    workload(&["create-files", many.to_str().unwrap(), "1000"]);
    let rm = std::process::Command::new("rm")
        .arg("-rf")
        .arg(&many)
        .status()
        .unwrap();
    assert!(rm.success());
    let last = many.display().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let (code, body) = obs.http("/dump");
        assert_eq!(code, 200, "{body}");
        let lines: Vec<serde_json::Value> = body
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        // The directory's removal is the last deletion.
        if lines
            .iter()
            .any(|v| v["kind"] == "delete" && v["path"] == last.as_str())
        {
            break lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the removal of {last} never reached the window:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let deletions = lines.iter().filter(|v| v["kind"] == "delete").count();
    assert_eq!(
        enospc_events(&lines).len() as u64,
        failures,
        "every failure is still in the window after {deletions} deletions"
    );
    assert!(
        (50..=100 - failures as usize).contains(&deletions),
        "the deletions fill the rest of the window: {deletions}"
    );
}
