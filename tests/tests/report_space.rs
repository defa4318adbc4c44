//! Where the space is: growth attribution exact and bounded at scale, the bytes measured in
//! the culprit directories, what a killed daemon left behind (workspaces, pid files naming a
//! dead owner), and space held by deleted-but-open files.

use std::time::Duration;

use integration_tests::*;

/// A million creates across a hundred thousand directories: the hot directories' counts stay
/// exact (the kernel's per-directory map holds 16,384 keys, least recently used out), the
/// filesystem's total is exact, and the daemon's memory, its series and its report stay
/// bounded.
#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: a million creates under emulation take too long"
)]
fn a_million_creates_in_a_hundred_thousand_directories_stay_exact_where_it_matters_and_bounded() {
    const COLD: usize = 100_000;
    const PER_COLD: usize = 8;
    const HOT: usize = 10;
    const PER_HOT_VISIT: usize = 2;
    let m = Mount::tmpfs("size=2g,nr_inodes=2000000");
    let mount = m.dir.to_str().unwrap().to_string();
    let hot: Vec<_> = (0..HOT).map(|h| m.dir.join(format!("hot{h}"))).collect();
    for h in &hot {
        std::fs::create_dir(h).unwrap();
    }
    std::fs::create_dir(m.dir.join("cold")).unwrap();
    // This filesystem only: the series bound below is then this test's.
    let obs = Observer::start(&[
        "--set",
        "growth.enabled=true",
        "--set",
        "growth.interval_ms=500",
        "--watch-mount",
        m.dir.to_str().unwrap(),
    ]);
    let started = std::time::Instant::now();
    let mut n = 0u64;
    for d in 0..COLD {
        let dir = m.dir.join(format!("cold/d{d}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..PER_COLD {
            std::fs::File::create(dir.join(format!("f{f}"))).unwrap();
        }
        for f in 0..PER_HOT_VISIT {
            std::fs::File::create(hot[d % HOT].join(format!("f{d}-{f}"))).unwrap();
        }
        n += (PER_COLD + PER_HOT_VISIT) as u64;
    }
    assert_eq!(n, 1_000_000);
    eprintln!("1,000,000 creates in {:?}", started.elapsed());
    let per_hot = (COLD / HOT * PER_HOT_VISIT) as u64;
    let series = format!("fsobserver_entries_created_total{{mount=\"{mount}\",kind=\"file\"}}");
    obs.wait_metric(&series, |v| v == n as f64);
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    let r = loop {
        let r = obs.report("purge=false");
        let exact =
            hot.iter().all(|h| {
                r["directories"].as_array().unwrap().iter().any(|d| {
                    d["dir"] == h.to_str().unwrap() && d["created"].as_u64() == Some(per_hot)
                })
            });
        if exact {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "hot directories not exact: {:#}",
            r["directories"]
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let text = serde_json::to_string(&r).unwrap();
    assert!(text.len() < 1 << 20, "report of {} bytes", text.len());
    let metrics = obs.metrics();
    let lines = metrics.lines().filter(|l| !l.starts_with('#')).count();
    assert!(lines < 400, "{lines} series");
    let rss = obs.rss_kib();
    assert!(rss < 160 * 1024, "daemon RSS {rss} KiB");
    eprintln!(
        "report {} bytes, {lines} series, RSS {} MiB",
        text.len(),
        rss / 1024
    );
}

/// A process holding a 100 MiB deleted file open: the report names it and the space.
#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: userspace behaviour, the same on every kernel"
)]
fn the_report_names_a_deleted_but_open_file_and_its_holder() {
    let m = Mount::tmpfs("size=160m");
    let f = m.path("big.log");
    std::fs::write(&f, vec![7u8; 100 << 20]).unwrap();
    let obs = Observer::start(&[
        "--set",
        "growth.enabled=true",
        "--set",
        "capacity.deleted_open_secs=1",
    ]);
    let (mut holder, line) = spawn_ready(&mut workload_cmd(&["hold", &f, "open", "120"]));
    assert!(line.contains("ready=1"), "{line}");
    std::fs::remove_file(&f).unwrap();
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    let md = loop {
        // This filesystem's story (other processes on the node may hold deleted files too).
        let out = observer_cmd(&[
            "report",
            "--addr",
            obs.addr(),
            "--no-purge",
            "--mount",
            m.dir.to_str().unwrap(),
        ]);
        let md = String::from_utf8_lossy(&out.stdout).to_string();
        if md.contains(&format!(
            "- {} `fsobs-workload` holds 1 deleted files, 100.0 MiB",
            holder.id()
        )) {
            break md;
        }
        assert!(std::time::Instant::now() < deadline, "not named:\n{md}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        md.contains("100.0 MiB held by deleted-but-open files"),
        "{md}"
    );
    holder.kill().unwrap();
    wait_within(&mut holder, CHILD_TIMEOUT, "holder");
}

/// A job daemon that makes a workspace per job — a directory, its `.cred.sh` and its
/// `-artifacts` — and records its pid in a pid file, is SIGKILLed with three jobs open: the
/// report lists the three workspaces it left (and not the two it cleaned), the pid file naming
/// it, now gone (and not a pid file naming a live process), and the bytes the workspace
/// directory holds, attributed to the daemon's workload.
#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: needs a shell (the kernel's part, killed processes and their counts, is proven in every cell by report.rs)"
)]
fn a_killed_daemons_workspaces_and_pid_file_are_listed_with_the_bytes_they_hold() {
    let m = Mount::tmpfs("size=64m");
    let ws = m.path("ws");
    let work = tempfile::tempdir().unwrap();
    let jobd = work.path().join("jobd");
    std::fs::copy("/bin/sh", &jobd).unwrap();
    std::fs::create_dir(m.dir.join("other")).unwrap();
    std::fs::write(
        m.dir.join("other/alive.pid"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    // This filesystem only: other tests' killed processes and pid files are not this daemon's.
    let obs = Observer::start(&[
        "--set",
        "growth.enabled=true",
        "--set",
        "growth.interval_ms=200",
        "--set",
        "growth.bytes_interval_secs=1",
        "--set",
        "growth.culprit_min_net=2",
        "--watch-mount",
        m.dir.to_str().unwrap(),
    ]);
    let script = r#"
        mkdir -p "$1" && cd "$1" || exit 9
        echo $$ > jobd.pid
        for i in 1 2 3 4 5; do
            mkdir "job-$i" "job-$i-artifacts" || exit 3
            echo "export TOKEN=x" > "job-$i.cred.sh"
            head -c 1048576 /dev/zero > "job-$i-artifacts/out.bin"
        done
        rm -rf job-1 job-1.cred.sh job-1-artifacts job-2 job-2.cred.sh job-2-artifacts
        echo ready
        exec sleep 600
    "#;
    let (mut d, line) = spawn_ready(
        std::process::Command::new(&jobd)
            .arg("-c")
            .arg(script)
            .arg("jobd")
            .arg(&ws),
    );
    assert_eq!(line.trim(), "ready");
    // Killed once its counts were read (a process the observer never counted is not known).
    let pid = d.id();
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    while !obs.report("purge=false")["creators"]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["pid"] == pid)
    {
        assert!(std::time::Instant::now() < deadline, "jobd never counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    d.kill().unwrap();
    wait_within(&mut d, CHILD_TIMEOUT, "jobd");
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    let (r, row) = loop {
        let r = obs.report("purge=false");
        let row = r["orphans"]["killed_processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["pid"] == pid)
            .cloned();
        let sized = dir_row(&r["culprits"], &ws).is_some_and(|c| c["bytes"].is_object());
        if let Some(row) = row
            && sized
        {
            break (r, row);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no killed row or bytes: {r:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(row["signal"], 9);
    assert_eq!(row["comm"], "jobd");
    // Its own creates: the pid file, five .cred.sh and five out.bin (mkdir and rm are others).
    assert_eq!(row["entries_left"], 11, "{row:#}");
    let spaces: Vec<(String, Vec<String>)> = row["left"]["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["dir"] == ws.as_str())
        .map(|w| {
            let members = w["members"].as_array().unwrap().iter();
            (
                w["stem"].as_str().unwrap().to_string(),
                members.map(|m| m.as_str().unwrap().to_string()).collect(),
            )
        })
        .collect();
    let want: Vec<(String, Vec<String>)> = (3..=5)
        .map(|i| {
            (
                format!("job-{i}"),
                vec![
                    format!("job-{i}"),
                    format!("job-{i}-artifacts"),
                    format!("job-{i}.cred.sh"),
                ],
            )
        })
        .collect();
    assert_eq!(spaces, want, "{:#}", row["left"]);
    let pid_files = &r["orphans"]["pid_files_dead_owner"];
    assert_eq!(
        pid_files,
        &serde_json::json!([{"path": format!("{ws}/jobd.pid"), "pid": pid}]),
        "the live one in other/ is not listed"
    );
    // Bytes: three 1 MiB artifacts and three small files (a page each on tmpfs), measured.
    let b = &dir_row(&r["culprits"], &ws).unwrap()["bytes"];
    let bytes = b["bytes"].as_u64().unwrap();
    assert!(b["complete"] == true, "{b:#}");
    assert!(
        (3 << 20..(3 << 20) + (64 << 10)).contains(&bytes),
        "{bytes} bytes: {b:#}"
    );
    let workload = row["workload"].as_str().unwrap();
    let wl = r["creators"]["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workload"] == workload)
        .unwrap_or_else(|| panic!("no workload {workload}: {:#}", r["creators"]));
    assert!(wl["bytes"].as_u64().unwrap_or(0) >= 3 << 20, "{wl:#}");
    let out = observer_cmd(&["report", "--addr", obs.addr(), "--no-purge"]);
    let md = String::from_utf8_lossy(&out.stdout);
    for want in [
        format!("workspace {ws}/job-3: job-3, job-3-artifacts, job-3.cred.sh"),
        format!("pid file {ws}/jobd.pid names process {pid}, which is gone"),
        "among them 3 workspaces".to_string(),
        "3.0 MiB".to_string(),
    ] {
        assert!(md.contains(&want), "no {want:?} in:\n{md}");
    }
    assert!(
        !md.contains("job-1.cred.sh"),
        "a cleaned workspace listed:\n{md}"
    );
}
