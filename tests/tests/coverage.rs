//! Kernel coverage beyond write/open: deletion churn counted exactly in kernel maps, EDQUOT,
//! fallocate/mkdir ENOSPC, io_uring completions, and the in-kernel filters.

use integration_tests::*;

use integration_tests::daemon::{errors_series, storm};

fn syscall_event(v: &Value, pid: u64, syscall: &str, errno: u64) -> bool {
    v["type"] == "syscall" && v["pid"] == pid && v["syscall"] == syscall && v["errno"] == errno
}

#[test]
fn rm_rf_of_10000_files_is_counted_exactly_with_a_one_page_ring() {
    let mnt = Mount::tmpfs("size=64M,nr_inodes=20000");
    let tree = mnt.path("tree");
    std::fs::create_dir(&tree).unwrap();
    let made = workload(&["create-files", &tree, "10000"]);
    assert_eq!(made.get("created"), "10000");
    // Every deletion wants a detail record, the ring holds a page: records must be lost, counts
    // not. This filesystem only: the bounded per-directory list below is then this test's.
    let obs = Observer::start(&[
        "--ring-buffer-bytes",
        "4096",
        "--delete-sample",
        "1",
        "--watch-mount",
        mnt.dir.to_str().unwrap(),
    ]);
    let rm = std::process::Command::new("rm")
        .args(["-rf", "tree"])
        .current_dir(&mnt.dir)
        .spawn()
        .unwrap();
    let rm_pid = rm.id() as u64;
    let mut rm = rm;
    let st = wait_within(&mut rm, CHILD_TIMEOUT, "rm -rf");
    assert!(st.success());
    assert!(!std::path::Path::new(&tree).exists());
    let lines = obs.stop();
    let stats = final_stats(&lines);
    let by_pid = delete_row(stats, rm_pid);
    assert_eq!(
        (by_pid["files"].as_u64(), by_pid["dirs"].as_u64()),
        (Some(10000), Some(1)),
        "{by_pid}"
    );
    assert_eq!(by_pid["failed"], 0);
    let dev = mount_dev(&mnt.dir);
    let by_mount = stats["deletes_by_mount"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dev"] == dev.as_str());
    let by_mount = by_mount.unwrap_or_else(|| panic!("{dev} not in deletes_by_mount: {stats}"));
    assert_eq!(
        (by_mount["files"].as_u64(), by_mount["dirs"].as_u64()),
        (Some(10000), Some(1)),
        "{by_mount}"
    );
    assert_eq!(by_mount["mount"], mnt.dir.to_str().unwrap());
    let dirs_total: u64 = stats["deletes_by_dir"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["dev"] == dev.as_str())
        .map(|r| r["files"].as_u64().unwrap() + r["dirs"].as_u64().unwrap())
        .sum();
    assert_eq!(dirs_total, 10001, "per-directory counts add up: {stats}");
    let delivered = lines
        .iter()
        .filter(|v| v["kind"] == "delete" && v["pid"] == rm_pid)
        .count() as u64;
    let lost = stats["kernel_ring_drops"].as_u64().unwrap()
        + stats["userspace_queue_drops"].as_u64().unwrap();
    assert!(
        delivered < 10001 && lost > 0,
        "a one-page ring must lose details: delivered {delivered}, lost {lost}"
    );
}

/// `major:minor` of the filesystem mounted at `dir`.
#[test]
fn deletion_counts_read_during_rm_rf_never_go_back_and_end_exact() {
    // 200 directories of 40 files: the directory key changes every 41 deletions, so each CPU's
    // pending slot moves into the maps hundreds of times while /metrics is being read.
    let mnt = Mount::tmpfs("size=64M,nr_inodes=20000");
    let tree = mnt.path("tree");
    for d in 0..200 {
        let dir = format!("{tree}/d{d}");
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..40 {
            std::fs::write(format!("{dir}/f{f}"), b"").unwrap();
        }
    }
    let m = mnt.dir.to_str().unwrap();
    // Its own filesystem only (other test binaries may delete meanwhile): every row of the
    // bounded list below is then this test's, but for deletions by absolute name anywhere
    // (directory unresolved in the kernel: dev 0), which no filesystem filter can place.
    let obs = Observer::start(&["--watch-mount", m]);
    let series = |op: &str| format!("fsobserver_deletes_total{{mount=\"{m}\",op=\"{op}\"}}");
    // Like GNU `rm -rf` (busybox's rm in the VMs names every file from the cwd instead).
    // A 3 ms pause after each directory: the reads below interleave with the moves.
    let mut rm = workload_cmd(&["rm-tree", &tree, "200", "40", "3000"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (mut reads, mut rising, mut last) = (0u32, 0u32, (0.0, 0.0));
    loop {
        let done = rm.try_wait().unwrap().is_some();
        let text = obs.metrics();
        let now = (
            metric_value(&text, &series("file")).unwrap_or(0.0),
            metric_value(&text, &series("dir")).unwrap_or(0.0),
        );
        assert!(
            now.0 >= last.0 && now.1 >= last.1,
            "a deletion counter went back from {last:?} to {now:?} (read {reads})"
        );
        if now.0 > last.0 && now.0 < 8000.0 {
            rising += 1;
        }
        last = now;
        reads += 1;
        if done {
            break;
        }
    }
    assert!(wait_within(&mut rm, CHILD_TIMEOUT, "rm-tree").success());
    // Every deletion is in the counts once the slots are read at rest.
    obs.wait_metric(&series("file"), |v| v == 8000.0);
    obs.wait_metric(&series("dir"), |v| v == 201.0);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let text = obs.metrics();
    assert_eq!(
        metric_value(&text, &series("file")),
        Some(8000.0),
        "no more arrive later"
    );
    let lines = obs.stop();
    let stats = final_stats(&lines);
    let dev = mount_dev(&mnt.dir);
    // Per directory (the 20 busiest are listed): `tree` lost its 200 subdirectories, each d<N>
    // its 40 files, the mount root `tree` itself: exact through every move between slot and map.
    let listed = stats["deletes_by_dir"].as_array().unwrap();
    assert_eq!(listed.len(), 20, "{stats}");
    assert!(
        listed
            .iter()
            .all(|r| r["dev"] == dev.as_str() || r["dev"] == "0:0"),
        "only this filesystem's directories (and unresolved names): {stats}"
    );
    let rows: Vec<(u64, u64)> = listed
        .iter()
        .filter(|r| r["dev"] == dev.as_str())
        .map(|r| (r["files"].as_u64().unwrap(), r["dirs"].as_u64().unwrap()))
        .collect();
    assert!(rows.len() >= 19, "{stats}");
    assert!(rows.contains(&(0, 200)), "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| matches!(r, (0, 200) | (40, 0) | (0, 1))),
        "{rows:?}"
    );
    // The check above means something only if the counts were read moving while the
    // deletions went on (not once at the start, not only at the end).
    assert!(
        rising >= 10,
        "only {rising} of {reads} reads saw the counts move during the deletions"
    );
}

#[test]
fn fallocate_and_mkdir_enospc_are_reported() {
    let small = Mount::tmpfs("size=1M");
    let few_inodes = Mount::tmpfs("size=1M,nr_inodes=8");
    let mut obs = Observer::shared(&[]);
    let file = small.path("prealloc");
    let fa = workload(&["fallocate", &file, "8388608"]);
    assert_eq!(fa.get("errno"), "28");
    let ev = obs.wait_for("fallocate ENOSPC", |v| {
        syscall_event(v, fa.pid(), "fallocate", 28)
    });
    assert_eq!(
        (ev["path"].as_str(), ev["count"].as_u64()),
        (Some(file.as_str()), Some(8388608))
    );

    let dir = few_inodes.dir.to_str().unwrap().to_string();
    let mk = workload(&["mkdirs", &dir]);
    assert_eq!(mk.get("errno"), "28");
    let failed = mk.get("failed").to_string();
    let ev = obs.wait_for("mkdirat ENOSPC", |v| {
        syscall_event(v, mk.pid(), "mkdirat", 28)
    });
    assert_eq!(ev["path"], format!("{dir}/{failed}"));
}

#[test]
fn io_uring_write_enospc_is_reported_with_its_file() {
    let small = Mount::tmpfs("size=1M");
    let mut obs = Observer::shared(&[]);
    let file = small.path("ring-target");
    let full = small.path("filler");
    assert_eq!(workload(&["fill", &full]).get("errno"), "28");
    std::fs::write(&file, b"").unwrap();
    let w = workload(&["uring-write", &file, "5"]);
    assert_eq!((w.get("failed"), w.get("errno")), ("5", "28"));
    let ev = obs.wait_for("io_uring completion ENOSPC", |v| {
        syscall_event(v, w.pid(), "io_uring", 28)
    });
    // Kernels whose completion record names the request (5.19+) give its opcode and file.
    if kernel_at_least(5, 19) {
        assert_eq!(ev["io_uring_op"], "write", "{ev}");
        assert_eq!(ev["path"], file.as_str(), "{ev}");
    } else {
        assert!(ev.get("io_uring_op").is_none(), "{ev}");
    }
    // Counted in the kernel per (syscall, errno, filesystem): every failed completion, exactly
    // (the filesystem is known from 5.19, whose completion record names the request).
    let stats = obs.stats();
    let dev = if kernel_at_least(5, 19) {
        mount_dev(&small.dir)
    } else {
        "0:0".to_string()
    };
    assert_eq!(error_count_on(&stats, "io_uring", 28, &dev), 5);
}

#[test]
fn rename_and_unlink_failures_are_counted() {
    let mnt = Mount::tmpfs("size=1M");
    let obs = Observer::shared(&[]);
    let dev = mount_dev(&mnt.dir);
    // The shared observer may hold counts of an earlier filesystem with this device number.
    let before = error_count_on(&obs.stats(), "rename", 2, &dev);
    std::fs::write(mnt.path("a"), b"1").unwrap();
    let ok = workload_in(&mnt.dir, &["rename", "a", "b"]);
    assert_eq!(ok.get("errno"), "0");
    let missing = workload_in(&mnt.dir, &["rename", "a", "b"]);
    assert_eq!(missing.get("errno"), "2");
    let r = delete_row(&obs.stats_for(ok.pid()), ok.pid());
    assert_eq!(
        (r["renames"].as_u64(), r["failed"].as_u64()),
        (Some(1), Some(0))
    );
    let stats = obs.stats_for(missing.pid());
    let r = delete_row(&stats, missing.pid());
    assert_eq!(
        (r["renames"].as_u64(), r["failed"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(
        error_count_on(&stats, "rename", 2, &dev),
        before + 1,
        "{stats}"
    );
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "no btrfs in the VMs (a module the initramfs does not carry, no mkfs.btrfs)"
)]
fn edquot_from_a_btrfs_qgroup_limit_is_reported() {
    let fs = BtrfsQuota::new("4M");
    let mut obs = Observer::start(&[]);
    let file = format!("{}/data.bin", fs.subvol.display());
    let w = workload(&["fill", &file]);
    assert_eq!(w.get("errno"), "122", "the qgroup limit must give EDQUOT");
    let ev = obs.wait_for("write EDQUOT", |v| syscall_event(v, w.pid(), "write", 122));
    assert_eq!(
        (ev["errno_name"].as_str(), ev["path"].as_str()),
        (Some("EDQUOT"), Some(file.as_str()))
    );
    obs.stop();
}

#[test]
fn excluded_comms_and_unwatched_mounts_are_not_reported() {
    let watched = Mount::tmpfs("size=64k");
    let other = Mount::tmpfs("size=64k");
    let mut obs = Observer::start(&[
        "--watch-mount",
        watched.dir.to_str().unwrap(),
        "--exclude-comm",
        "fsobs-workload",
    ]);
    let dd = |file: String| {
        let child = std::process::Command::new("dd")
            .args(["if=/dev/zero", &format!("of={file}"), "bs=4k", "count=64"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as u64;
        let mut child = child;
        wait_within(&mut child, CHILD_TIMEOUT, "dd");
        pid
    };
    // Each filter alone: dd (not excluded) on the unwatched mount, the excluded comm on the
    // watched one; then dd on the watched mount proves the observer was live.
    let unwatched = dd(other.path("x"));
    let hidden = workload(&["fill", &watched.path("z")]);
    assert_eq!(hidden.get("errno"), "28");
    let seen = dd(watched.path("y"));
    obs.wait_for("dd ENOSPC on the watched mount", |v| {
        syscall_event(v, seen, "write", 28)
    });
    let lines = obs.stop();
    assert!(
        !lines.iter().any(|v| v["pid"] == unwatched),
        "unwatched mount reported"
    );
    assert!(
        !lines.iter().any(|v| v["pid"] == hidden.pid()),
        "excluded comm reported"
    );
    // Machine-wide: other processes' calls on other filesystems are filtered too.
    assert!(final_stats(&lines)["kernel_filtered"].as_u64().unwrap() >= 2);
}

#[test]
fn rename_over_an_existing_file() {
    let mnt = Mount::tmpfs("size=1M");
    let obs = Observer::shared(&[]);
    let (a, b) = (mnt.path("new"), mnt.path("current"));
    std::fs::write(&a, b"new").unwrap();
    std::fs::write(&b, b"old").unwrap();
    let w = workload(&["rename", &a, &b]);
    assert_eq!(w.get("errno"), "0");
    let row = delete_row(&obs.stats_for(w.pid()), w.pid());
    assert_eq!(row["renames"], 1, "{row}");
    // Only the VFS hook can see that the target existed; syscall tracepoints cannot.
    let over = if expected_mode() == "fexit" { 1 } else { 0 };
    assert_eq!(row["renames_over"], over, "mode {}: {row}", expected_mode());
}

#[test]
fn a_failure_inside_the_vfs_is_counted_once() {
    // rmdir of a non-empty directory fails in vfs_rmdir itself (ENOTEMPTY): in fexit mode both
    // the fexit and the sys_exit program see it, and exactly one may count it.
    let mnt = Mount::tmpfs("size=1M");
    let dir = mnt.path("full");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(format!("{dir}/keep"), b"x").unwrap();
    let obs = Observer::shared(&[]);
    let dev = mount_dev(&mnt.dir);
    // The shared observer may hold counts of an earlier filesystem with this device number.
    let before = error_count_on(&obs.stats(), "rmdir", libc::ENOTEMPTY as u64, &dev);
    // A relative name: the kernel resolves the filesystem, so the count is this one's alone.
    let child = std::process::Command::new("rmdir")
        .arg("full")
        .current_dir(&mnt.dir)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as u64;
    let mut child = child;
    assert!(!wait_within(&mut child, CHILD_TIMEOUT, "rmdir").success());
    let stats = obs.stats_for(pid);
    let row = delete_row(&stats, pid);
    assert_eq!(
        (row["failed"].as_u64(), row["dirs"].as_u64()),
        (Some(1), Some(0)),
        "{row}"
    );
    assert_eq!(
        error_count_on(&stats, "rmdir", libc::ENOTEMPTY as u64, &dev),
        before + 1,
        "{stats}"
    );
}

/// Counts are kept by device number, and the kernel gives an unmounted tmpfs's number to the
/// next filesystem mounted: the observer forgets an unmounted filesystem's counts, so the next
/// one starts from zero instead of from the last one's failures.
#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: userspace behaviour (the mount table and the maps), the same on every kernel"
)]
fn a_device_number_given_to_a_new_filesystem_starts_from_zero() {
    let a = Mount::tmpfs("size=64k");
    let dev = mount_dev(&a.dir);
    // That number's failures only (whichever filesystem has it).
    let obs = Observer::start(&["--watch-mount", a.dir.to_str().unwrap()]);
    let (_, total) = storm(&a.dir, "f", 9);
    let count = || error_count_on(&obs.stats(), "write", 28, &dev);
    assert_eq!(count(), total, "counted on {dev}");
    // A deletion too (a relative name: counted on this filesystem, in a CPU's pending slot).
    let rm = std::process::Command::new("rm")
        .arg("f")
        .current_dir(&a.dir)
        .status()
        .unwrap();
    assert!(rm.success());
    let deleted = |stats: &Value| {
        stats["deletes_by_mount"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["dev"] == dev.as_str())
            .map(|r| r["files"].as_u64().unwrap())
    };
    assert_eq!(deleted(&obs.stats()), Some(1));
    drop(a);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while count() != 0 || deleted(&obs.stats()).is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "{dev}'s counts kept after its unmount: {}",
            obs.stats()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Mount until a filesystem gets the number again (the lowest free one is given; the
    // mounts that get lower ones are held meanwhile).
    let mut held = Vec::new();
    let b = loop {
        let m = Mount::tmpfs("size=64k");
        if mount_dev(&m.dir) == dev {
            break m;
        }
        held.push(m);
        assert!(held.len() < 64, "{dev} was not given again");
    };
    drop(held);
    let w = workload(&["fill", &b.path("g")]);
    assert_eq!(w.get("errno"), "28");
    let stats = obs.stats();
    assert_eq!(
        error_count_on(&stats, "write", 28, &dev),
        1,
        "the new filesystem on {dev} starts from zero: {stats}"
    );
    let metrics = obs.metrics();
    assert_eq!(
        metric_value(&metrics, &errors_series("write", "ENOSPC", &b.dir)),
        Some(1.0),
        "{metrics}"
    );
}
