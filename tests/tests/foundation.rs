//! Foundation behaviour on the real kernel: ENOSPC from write and openat caught with identity
//! and full path, successes filtered out, exact in-kernel counts under drops, clean start-up
//! failures and clean detach.

use integration_tests::*;

const ENOSPC: u64 = 28;

fn is_event(v: &Value, pid: u64, syscall: &str, errno: u64) -> bool {
    v["type"] == "syscall" && v["pid"] == pid && v["syscall"] == syscall && v["errno"] == errno
}

#[test]
fn write_enospc_names_the_child_errno_and_absolute_path() {
    let mnt = Mount::tmpfs("size=1M");
    let mut obs = Observer::shared(&[]);
    let mode = expected_mode();
    assert!(
        obs.startup.contains(&format!("probe mode {mode}:")),
        "{}",
        obs.startup
    );
    assert!(
        obs.startup.contains("syscalls/sys_exit_write"),
        "{}",
        obs.startup
    );

    // The observer sees the whole node and lives as long as this binary: ring drops are read
    // over this test's window, and the count on this filesystem's device number too (an
    // earlier filesystem, since unmounted, may have had the same number).
    let before = obs.stats();
    let drops_before = before["kernel_ring_drops"].as_u64().unwrap();
    let queue_drops_before = before["userspace_queue_drops"].as_u64().unwrap();
    let dev = mount_dev(&mnt.dir);
    let enospc_before = error_count_on(&before, "write", ENOSPC, &dev);
    let file = mnt.path("data.bin");
    let w = workload(&["fill", &file]);
    assert_eq!(w.get("errno"), "28", "the workload must really hit ENOSPC");
    let pid = w.pid();

    let ev = obs.wait_for("write ENOSPC from the filler", |v| {
        is_event(v, pid, "write", ENOSPC)
    });
    assert_eq!(ev["comm"], "fsobs-workload");
    assert_eq!(ev["errno_name"], "ENOSPC");
    assert_eq!(ev["ret"], -28);
    assert_eq!(ev["path"], file.as_str());
    assert_eq!(ev["path_complete"], true);
    assert_eq!(ev["count"], 4096);
    assert_eq!(ev["tid"], pid, "single-threaded workload");
    assert_eq!(ev["fd"].to_string(), w.get("fd"));
    assert_eq!(ev["ino"].to_string(), w.get("ino"));

    let stats = obs.stats();
    // The filler stops at its first failure: exactly one failed write on this filesystem.
    assert_eq!(
        error_count_on(&stats, "write", ENOSPC, &dev),
        enospc_before + 1,
        "{stats}"
    );
    assert_eq!(stats["kernel_ring_drops"].as_u64(), Some(drops_before));
    assert_eq!(
        stats["userspace_queue_drops"].as_u64(),
        Some(queue_drops_before)
    );
}

fn openat_enospc(mode: &str) {
    let mnt = Mount::tmpfs("size=4M,nr_inodes=16");
    let dir = mnt.dir.to_str().unwrap().to_string();
    let mut obs = Observer::shared(&[]);
    let w = workload(&["create", &dir, mode]);
    assert_eq!(w.get("errno"), "28", "inode exhaustion must give ENOSPC");
    let failed = w.get("failed").to_string();
    let pid = w.pid();
    let ev = obs.wait_for(&format!("openat ENOSPC ({mode})"), |v| {
        is_event(v, pid, "openat", ENOSPC)
    });
    assert_eq!(ev["path"], format!("{dir}/{failed}"), "mode {mode}: {ev}");
    assert_eq!(ev["path_complete"], true, "{ev}");
    let flags = ev["open_flags"].as_u64().unwrap();
    assert_ne!(flags & libc::O_CREAT as u64, 0, "O_CREAT reported: {ev}");
    let base_flag = match mode {
        "dirfd" => Some("base_dirfd"),
        "cwd" => Some("base_cwd"),
        _ => None,
    };
    let path_flags: Vec<&str> = ev["path_flags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match base_flag {
        Some(f) => assert!(path_flags.contains(&f), "{ev}"),
        None => assert!(
            !path_flags.contains(&"walked"),
            "absolute path needs no walk: {ev}"
        ),
    }
    if mode == "dirfd" {
        assert_eq!(ev["fd"].to_string(), w.get("dirfd"), "dirfd reported: {ev}");
    } else {
        assert_eq!(ev["fd"], -100, "AT_FDCWD reported: {ev}");
    }
}

#[test]
fn openat_enospc_relative_to_dirfd_reports_full_path() {
    openat_enospc("dirfd");
}

#[test]
fn openat_enospc_relative_to_cwd_reports_full_path() {
    openat_enospc("cwd");
}

#[test]
fn openat_enospc_absolute_path() {
    openat_enospc("abs");
}

#[test]
fn successful_writes_produce_no_event() {
    let roomy = Mount::tmpfs("size=16M");
    let full = Mount::tmpfs("size=64k");
    let mut obs = Observer::shared(&[]);
    let dev = mount_dev(&roomy.dir);
    let before = error_count_on(&obs.stats(), "pwrite64", ENOSPC, &dev);
    let ok = workload(&["write-ok", &roomy.path("ok.bin"), "20000"]);
    assert_eq!(ok.get("errno"), "0");
    let ok_pid = ok.pid();
    // A failure afterwards proves the observer was live while the successes ran.
    let marker = workload(&["fill", &full.path("marker")]);
    let marker_pid = marker.pid();
    obs.wait_for("marker ENOSPC", |v| {
        is_event(v, marker_pid, "write", ENOSPC)
    });
    let lines = obs.barrier();
    let from_ok: Vec<_> = lines
        .iter()
        .filter(|v| v["type"] == "syscall" && v["pid"] == ok_pid)
        .collect();
    assert!(
        from_ok.is_empty(),
        "successful writes were reported: {from_ok:?}"
    );
    let stats = obs.stats();
    assert_eq!(error_count_on(&stats, "pwrite64", ENOSPC, &dev), before);
}

#[test]
fn counts_stay_exact_when_the_ring_and_queue_overflow() {
    let full = Mount::tmpfs("size=64k");
    let file = full.path("f");
    workload(&["fill", &file]);
    // Smallest ring (one page) and a one-slot queue: detail records must be lost, counts not.
    // Watching only this test's filesystem: the ring's totals are then this workload's alone,
    // whatever else fails on the machine meanwhile (other tests run beside this one).
    let mut obs = Observer::start(&[
        "--ring-buffer-bytes",
        "4096",
        "--queue-capacity",
        "1",
        "--watch-mount",
        full.dir.to_str().unwrap(),
    ]);
    const N: u64 = 5000;
    let w = workload(&["fail-writes", &file, &N.to_string()]);
    assert_eq!(w.get("failed"), N.to_string());
    let pid = w.pid();
    obs.wait_for("some write ENOSPC", |v| is_event(v, pid, "write", ENOSPC));
    let lines = obs.stop();
    let stats = final_stats(&lines);
    assert_eq!(
        error_count_on(stats, "write", ENOSPC, &mount_dev(&full.dir)),
        N,
        "exact in-kernel count: {stats}"
    );
    let kernel_events = stats["kernel_events"].as_u64().unwrap();
    let ring_drops = stats["kernel_ring_drops"].as_u64().unwrap();
    let per_cpu: u64 = stats["kernel_ring_drops_per_cpu"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(per_cpu, ring_drops);
    assert_eq!(
        kernel_events + ring_drops,
        N,
        "every failure is either sent or counted as dropped: {stats}"
    );
    let received = stats["userspace_received"].as_u64().unwrap();
    let queue_drops = stats["userspace_queue_drops"].as_u64().unwrap();
    assert_eq!(received, kernel_events, "{stats}");
    let printed = lines.iter().filter(|v| v["type"] == "syscall").count() as u64;
    assert_eq!(printed + queue_drops, received, "{stats}");
    assert!(
        ring_drops + queue_drops > 0,
        "a 4 KiB ring and 1-slot queue should lose some of {N}: {stats}"
    );
}

#[test]
fn sigterm_detaches_every_program() {
    let obs = Observer::start(&[]);
    // Its own programs (the fds it holds), whatever other observers run beside this test.
    let loaded = loaded_observer_programs();
    let ours: Vec<u32> = programs_held_by(obs.pid())
        .into_iter()
        .filter(|id| loaded.contains(id))
        .collect();
    // `attached N/M programs`: exactly the N it says are loaded (and then detached).
    let attached: usize = obs
        .startup
        .split("attached ")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|n| n.parse().ok())
        .expect("attached N/M in the start-up line");
    assert_eq!(ours.len(), attached, "{ours:?} vs {}", obs.startup);
    obs.stop();
    let after = loaded_observer_programs();
    let leaked: Vec<_> = ours.iter().filter(|id| after.contains(id)).collect();
    assert!(
        leaked.is_empty(),
        "programs still loaded after SIGTERM: {leaked:?}"
    );
}

fn start_failure(cmd: &mut std::process::Command) -> String {
    start_failure_code(cmd, 1)
}

fn start_failure_code(cmd: &mut std::process::Command, code: i32) -> String {
    // A start-up that should fail must not hang the test instead.
    let out = output_within(cmd, START_TIMEOUT);
    assert_eq!(
        out.status.code(),
        Some(code),
        "observer should refuse to start: {out:?}"
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one clear error line, got:\n{err}");
    assert!(lines[0].starts_with("fsobserver: error: "), "{err}");
    err
}

#[test]
fn refuses_to_start_without_privileges() {
    use std::os::unix::process::CommandExt as _;
    require_root();
    let mut cmd = std::process::Command::new(observer_bin());
    cmd.arg("run").uid(65534).gid(65534);
    let err = start_failure(&mut cmd);
    assert!(
        err.contains("insufficient privileges") && err.contains("CAP_BPF"),
        "{err}"
    );
}

#[test]
fn refuses_to_start_without_btf() {
    let mut cmd = std::process::Command::new(observer_bin());
    cmd.args(["run", "--btf", "/nonexistent/vmlinux"]);
    let err = start_failure(&mut cmd);
    assert!(
        err.contains("cannot read kernel BTF at /nonexistent/vmlinux"),
        "{err}"
    );
}

#[test]
fn refuses_to_start_without_tracefs() {
    use std::os::unix::process::CommandExt as _;
    require_root();
    let mut cmd = std::process::Command::new(observer_bin());
    cmd.args(["run", "--no-mount-tracefs"]);
    // In a private mount namespace, hide tracefs under empty tmpfs mounts.
    unsafe {
        cmd.pre_exec(|| {
            use nix::mount::{MsFlags, mount};
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            for dir in ["/sys/kernel/tracing", "/sys/kernel/debug"] {
                if std::path::Path::new(dir).exists() {
                    mount(
                        Some("none"),
                        dir,
                        Some("tmpfs"),
                        MsFlags::empty(),
                        None::<&str>,
                    )?;
                }
            }
            Ok(())
        });
    }
    let err = start_failure(&mut cmd);
    assert!(err.contains("tracefs is not mounted"), "{err}");
}

#[test]
fn config_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[probes]\nerrnos = [\"ENOSPC\", \"EWHAT\"]\n").unwrap();
    let mut cmd = std::process::Command::new(observer_bin());
    cmd.args(["run", "--config", cfg.to_str().unwrap()]);
    let err = start_failure_code(&mut cmd, 2);
    assert!(err.contains("unknown errno \"EWHAT\""), "{err}");
}

#[test]
fn mounts_are_removed_even_when_a_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::panic::catch_unwind(move || {
        let m = Mount::tmpfs("size=64k");
        tx.send(m.dir.clone()).unwrap();
        assert!(is_mounted(&m.dir));
        panic!("simulated test failure");
    });
    assert!(result.is_err());
    let dir = rx.recv().unwrap();
    assert!(
        !is_mounted(&dir),
        "{} still mounted after a panicking test",
        dir.display()
    );
}

#[test]
fn auto_mode_picks_the_best_set_the_kernel_allows() {
    let obs = Observer::start(&["--probe-mode", "auto"]);
    // fexit where this kernel lets a BPF program attach to vfs_write (probed independently of
    // the observer), syscall tracepoints otherwise.
    let want = if kernel_allows_fexit() {
        "fexit"
    } else {
        "tracepoint"
    };
    assert!(
        obs.startup.contains(&format!("probe mode {want}:")),
        "{}",
        obs.startup
    );
    if want == "fexit" {
        assert!(
            obs.startup.contains("fexit/vfs_write") && obs.startup.contains("fexit/vfs_unlink"),
            "{}",
            obs.startup
        );
    }
    obs.stop();
}

#[test]
fn forcing_fexit_starts_fexit_or_fails_clearly_where_the_kernel_refuses_it() {
    if kernel_allows_fexit() {
        let obs = Observer::start(&["--probe-mode", "fexit"]);
        assert!(obs.startup.contains("probe mode fexit:"), "{}", obs.startup);
        obs.stop();
        return;
    }
    let mut cmd = std::process::Command::new(observer_bin());
    cmd.args(["run", "--probe-mode", "fexit"]);
    let err = start_failure(&mut cmd);
    assert!(
        err.contains("probe mode fexit: the kernel refused program fso_fx_vfs_write"),
        "{err}"
    );
    assert!(err.contains("fexit on vfs_write"), "{err}");
}
