//! Emergency purge on real filesystems: the seed incident (a volume full of old worktrees makes
//! a job's open() fail with ENOSPC; the trigger fires; only stale entries go; the job's next open
//! succeeds), dry run by default and groups, and a 200,000-file purge that leaves /healthz fast.
//! The safety cases are in `purge_safety.rs`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use integration_tests::*;

use integration_tests::purge::*;

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: userspace behaviour, the same on every kernel"
)]
fn seed_incident_enospc_triggers_a_purge_of_only_stale_entries() {
    seed_incident(false);
}

/// The same incident on a node where the filesystem was already out of inodes when the
/// observer started: no trash directory could be made, so the run renames its first entry in
/// place and spends one freed inode on the trash directory later — it plans one inode more and
/// still ends at the target (one more old tree goes).
#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: userspace behaviour, the same on every kernel"
)]
fn a_purge_on_a_filesystem_full_before_the_observer_started_still_reaches_its_target() {
    seed_incident(true);
}

fn seed_incident(full_before_start: bool) {
    let m = Mount::tmpfs("size=8M,nr_inodes=256");
    let root = m.dir.join("work");
    for i in 0..8 {
        // old-0 is the oldest.
        let d = root.join(format!("worktrees/old-{i}"));
        tree(&d, 15);
        age(&d, (20 - i) * DAY);
    }
    for i in 0..2 {
        tree(&root.join(format!("worktrees/fresh-{i}")), 10);
    }
    std::fs::create_dir_all(m.dir.join("job")).unwrap();
    let cfgdir = tempfile::tempdir().unwrap();
    let cfg = config(
        cfgdir.path(),
        &format!(
            "[[purge.policies]]\nname = \"worktrees\"\nroot = \"{}\"\nmatch = [\"worktrees/*\"]\n\
             min_age_secs = 86400\ntarget_free_percent = 25\nauto = true\nexecute = true\n\
             cooldown_secs = 600\n[purge.policies.trigger]\nerrors_per_min = 1\n",
            root.display()
        ),
    );
    if full_before_start {
        let filler = m.dir.join("job/filler");
        std::fs::create_dir(&filler).unwrap();
        let mut i = 0;
        while std::fs::write(filler.join(format!("f{i}")), b"").is_ok() {
            i += 1;
        }
    }
    let mut obs = start(&cfg, &["--watch-mount", m.dir.to_str().unwrap()]);
    let trash = root.join(".fsobserver-trash");
    if !full_before_start {
        // The observer was there before the disk filled: its trash directory is made at start.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !trash.is_dir() {
            assert!(
                Instant::now() < deadline,
                "no trash directory made at start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The job fills the last inodes (or finds none) and its open() fails with ENOSPC.
    let job = workload(&["create", m.dir.join("job").to_str().unwrap(), "abs"]);
    assert_eq!(job.get("errno"), "28", "the job must hit ENOSPC");
    let ev = obs.wait_for("an automatic purge deletion", |v| {
        v["type"] == "purge" && v["trigger"] == "errors" && v["action"] == "deleted"
    });
    assert_eq!(ev["mode"], "execute");
    // The run's report, once it is complete.
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let (_, body) = obs.http("/purge");
        let v: Value = serde_json::from_str(&body).unwrap();
        if let Some(r) = v["recent_runs"].as_array().and_then(|r| r.first()) {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "no purge run recorded: {v:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    wait_trash_empty(&root);
    // Entries renamed in place (no trash directory yet) are removed in the background too.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(root.join("worktrees")).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".fsobserver-trash")
    }) {
        assert!(Instant::now() < deadline, "entries renamed in place remain");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Oldest first until 25% of the inodes are free (4 trees of 16 inodes, one inode more when
    // the trash directory is still to be made); younger old trees stay because the target was
    // reached, fresh ones because of their age.
    let deleted = if full_before_start { 5 } else { 4 };
    for i in 0..deleted {
        assert_eq!(verdict(&run, &format!("old-{i}")).0, "deleted", "{run:#}");
        assert!(!root.join(format!("worktrees/old-{i}")).exists());
    }
    for i in deleted..8 {
        assert_eq!(verdict(&run, &format!("old-{i}")).1, "target-reached");
        assert!(root.join(format!("worktrees/old-{i}")).exists());
    }
    for i in 0..2 {
        assert_eq!(verdict(&run, &format!("fresh-{i}")).1, "too-young");
        assert_eq!(count_files(&root.join(format!("worktrees/fresh-{i}"))), 10);
    }
    let st = nix::sys::statvfs::statvfs(&m.dir).unwrap();
    assert!(
        st.files_available() as f64 >= st.files() as f64 * 0.25,
        "free inodes {} of {}",
        st.files_available(),
        st.files()
    );
    // The job's next open succeeds.
    std::fs::write(m.dir.join("job/next"), b"ok").expect("the job's next open");
    let metrics = obs.metrics();
    assert_eq!(
        metric_value(
            &metrics,
            "fsobserver_purge_items_total{policy=\"worktrees\",action=\"deleted\"}"
        ),
        Some(deleted as f64),
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "fsobserver_purge_runs_total{policy=\"worktrees\",trigger=\"errors\",mode=\"execute\"}"
        ),
        Some(1.0)
    );
    obs.stop();
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: userspace behaviour, the same on every kernel"
)]
fn dry_run_is_the_default_and_groups_go_together() {
    let m = Mount::tmpfs("size=8M");
    let root = m.dir.join("r");
    let jobs = root.join("jobs");
    tree(&jobs.join("job-a"), 3);
    std::fs::write(jobs.join("job-a.cred.sh"), b"export TOKEN=x").unwrap();
    tree(&jobs.join("job-a-artifacts"), 2);
    tree(&jobs.join("job-b"), 1);
    std::fs::write(jobs.join("job-b.cred.sh"), b"export TOKEN=y").unwrap();
    for e in ["job-a", "job-a.cred.sh", "job-a-artifacts", "job-b.cred.sh"] {
        age(&jobs.join(e), 3 * DAY);
    }
    let cfgdir = tempfile::tempdir().unwrap();
    let cfg = config(
        cfgdir.path(),
        &format!(
            "[[purge.policies]]\nname = \"jobs\"\nroot = \"{}\"\nmatch = [\"jobs/*\"]\n\
             group = [\"{{}}.cred.sh\", \"{{}}-artifacts\"]\nmin_age_secs = 3600\n\
             execute = true\nmanual_execute = true\n",
            root.display()
        ),
    );
    let mut obs = start(&cfg, &[]);
    // What the policy matches (the root also holds the trash directory, which the purge thread
    // makes at start-up, possibly after this count).
    let before = count_files(&jobs);
    // Dry run: the default of the CLI.
    let out = observer_cmd(&["purge", "--policy", "jobs", "--addr", obs.addr()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("would-delete") && text.contains("job-a (+ job-a.cred.sh, job-a-artifacts)"),
        "{text}"
    );
    assert!(
        text.contains("too-young") && text.contains("would delete 1 entries"),
        "{text}"
    );
    assert_eq!(count_files(&jobs), before, "a dry run deletes nothing");
    // Execute: the whole group goes; job-b's old credentials stay with their young job.
    let out = observer_cmd(&[
        "purge",
        "--policy",
        "jobs",
        "--execute",
        "--json",
        "--addr",
        obs.addr(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("--json");
    let run = &v["runs"][0];
    assert_eq!(verdict(run, "/job-a"), ("deleted".into(), String::new()));
    assert_eq!(
        verdict(run, "/job-b"),
        ("skipped".into(), "too-young".into())
    );
    wait_trash_empty(&root);
    for gone in ["job-a", "job-a.cred.sh", "job-a-artifacts"] {
        assert!(!jobs.join(gone).exists(), "{gone}");
    }
    for kept in ["job-b", "job-b.cred.sh"] {
        assert!(jobs.join(kept).exists(), "{kept}");
    }
    // Every decision is an event, and the flight recorder (dumps) holds them.
    obs.wait_for("the audit event of job-a", |v| {
        v["type"] == "purge"
            && v["action"] == "deleted"
            && v["group"].as_array().is_some_and(|g| g.len() == 2)
    });
    let (_, dump) = obs.http("/dump");
    assert!(
        dump.contains("\"type\":\"purge\""),
        "dump has no purge items"
    );
    obs.stop();
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: userspace behaviour, the same on every kernel"
)]
fn a_200k_file_purge_runs_off_the_event_loop() {
    let m = Mount::tmpfs("size=256M,nr_inodes=400000");
    let root = m.dir.join("big");
    let t = root.join("w/tree");
    std::fs::create_dir_all(&t).unwrap();
    let made = workload(&["create-files", t.to_str().unwrap(), "200000"]);
    assert_eq!(made.get("errno"), "0");
    age(&root, 2 * DAY);
    let cfgdir = tempfile::tempdir().unwrap();
    let cfg = config(
        cfgdir.path(),
        &format!(
            "[[purge.policies]]\nname = \"big\"\nroot = \"{}\"\nmatch = [\"w/*\"]\nmin_age_secs = 3600\n\
             execute = true\nmanual_execute = true\n",
            root.display()
        ),
    );
    let obs = start(&cfg, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (stop, addr) = (stop.clone(), obs.addr().to_string());
        std::thread::spawn(move || {
            let (mut lat, mut scrapes) = (Vec::new(), 0);
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let (status, _) = http_get(&addr, "/healthz");
                assert_eq!(status, 200);
                lat.push(t0.elapsed());
                if lat.len() % 10 == 0 {
                    let (status, body) = http_get(&addr, "/metrics");
                    assert_eq!(status, 200, "{body}");
                    scrapes += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (lat, scrapes)
        })
    };
    let run = purge(&obs, "big", true);
    assert_eq!(verdict(&run, "w/tree").0, "deleted", "{run:#}");
    assert_eq!(item(&run, "w/tree")["entries"], 200_001);
    wait_trash_empty(&root);
    stop.store(true, Ordering::Relaxed);
    let (mut lat, scrapes) = prober.join().unwrap();
    assert!(scrapes > 0, "/metrics was never scraped during the purge");
    lat.sort();
    let p99 = lat[lat.len() * 99 / 100];
    eprintln!(
        "healthz during the purge: {} probes, p99 {p99:?}",
        lat.len()
    );
    assert!(lat.len() > 20, "too few probes");
    assert!(p99 < Duration::from_millis(100), "healthz p99 {p99:?}");
    obs.wait_metric("fsobserver_purge_removed_total{kind=\"file\"}", |v| {
        v >= 200_000.0
    });
    obs.stop();
}
