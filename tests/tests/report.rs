//! From symptom to cause: exact growth counts from the kernel, and `observer report` on the
//! incident this project exists for (a volume filled by worktrees and orphaned lockfiles).

use std::{path::Path, process::Command, time::Duration};

use integration_tests::*;

/// Every create is counted in the kernel, exactly, under the directory it was made in and the
/// process that made it: opens that created their file (not those that found it there),
/// directories made relative to a directory fd; the filesystem's total in `/metrics`.
#[test]
fn growth_is_counted_exactly_per_directory_process_and_filesystem() {
    let m = Mount::tmpfs("size=16m,nr_inodes=400");
    let mount = m.dir.to_str().unwrap().to_string();
    std::fs::create_dir(m.dir.join("a")).unwrap();
    std::fs::create_dir(m.dir.join("b")).unwrap();
    let obs = Observer::start(&[
        "--set",
        "growth.enabled=true",
        "--set",
        "growth.interval_ms=200",
    ]);
    let first = workload(&["create-files", &m.path("a"), "150"]);
    // The same names again: the files exist, nothing is created.
    let again = workload(&["create-files", &m.path("a"), "150"]);
    // Directories made with mkdirat(dirfd, "d<i>") until the inodes run out.
    let dirs = workload(&["mkdirs", &m.path("b")]);
    let made: u64 = dirs
        .get("failed")
        .trim_start_matches('d')
        .parse()
        .expect("mkdirs count");
    assert!(made > 100, "mkdirs made only {made}");
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    let r = loop {
        let r = obs.report("purge=false");
        let a = dir_row(&r["directories"], &m.path("a")).cloned();
        let b = dir_row(&r["directories"], &m.path("b")).cloned();
        if a.as_ref().is_some_and(|a| a["created"] == 150)
            && b.as_ref()
                .is_some_and(|b| b["mkdirs"].as_u64() == Some(made))
        {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "growth not counted: {r:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let a = dir_row(&r["directories"], &m.path("a")).unwrap();
    assert_eq!(
        (
            a["created"].as_u64(),
            a["mkdirs"].as_u64(),
            a["removed"].as_u64()
        ),
        (Some(150), Some(0), Some(0)),
        "{a:#}"
    );
    assert_eq!(a["net"], 150);
    assert_eq!(a["never_cleaned"], true);
    assert_eq!(a["first_creator"]["comm"], "fsobs-workload", "{a:#}");
    let procs = r["creators"]["processes"].as_array().unwrap();
    let by_pid = |pid: u64| procs.iter().find(|p| p["pid"].as_u64() == Some(pid));
    assert_eq!(
        by_pid(first.pid()).map(|p| p["created"].clone()),
        Some(150.into()),
        "{procs:#?}"
    );
    assert!(
        by_pid(again.pid()).is_none_or(|p| p["created"] == 0),
        "an open of an existing file counted as a create: {procs:#?}"
    );
    assert_eq!(
        by_pid(dirs.pid()).map(|p| p["mkdirs"].clone()),
        Some(made.into())
    );
    let metrics = obs.metrics();
    let files = metric_value(
        &metrics,
        &format!("fsobserver_entries_created_total{{mount=\"{mount}\",kind=\"file\"}}"),
    );
    let mkdirs = metric_value(
        &metrics,
        &format!("fsobserver_entries_created_total{{mount=\"{mount}\",kind=\"dir\"}}"),
    );
    assert_eq!(
        (files, mkdirs),
        (Some(150.0), Some(made as f64)),
        "{metrics}"
    );
    // The tmpfs is found and sampled with nothing configured.
    let fs = r["filesystems"].as_array().unwrap();
    assert!(fs.iter().any(|f| f["mount"] == mount.as_str()), "{fs:#?}");
    // A worker killed mid-job: the kernel saw the signal; what it left is its orphans (room
    // made first: the directories above took every inode).
    for d in 0..10 {
        std::fs::remove_dir(m.dir.join(format!("b/d{d}"))).unwrap();
    }
    let (mut worker, line) =
        spawn_ready(&mut workload_cmd(&["create-and-wait", &m.path("a"), "7"]));
    assert!(line.contains("ready=1"), "{line}");
    worker.kill().unwrap();
    wait_within(&mut worker, CHILD_TIMEOUT, "worker");
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let r = obs.report("purge=false");
        let row = r["orphans"]["killed_processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["pid"].as_u64() == Some(worker.id() as u64))
            .cloned();
        if let Some(row) = row {
            assert_eq!(
                (row["signal"].as_u64(), row["entries_left"].as_i64()),
                (Some(9), Some(7)),
                "{row:#}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the killed worker is not listed: {:#}",
            r["orphans"]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `sh` (named `ci-job`, so the kernel's comm says who the job is) with `script`.
fn job(bin: &Path, script: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.arg("-c").arg(script).arg("ci-job").args(args);
    c
}

/// The incident: jobs each take a lockfile (`O_CREAT|O_EXCL`), make a real `git worktree` and
/// an artifact in it, record their pid in the lockfile and release the lock; nothing ever
/// prunes the worktrees; some workers are SIGKILLed mid-job (their lockfiles stay, naming a
/// dead owner) — until a job's write to its lockfile fails with ENOSPC. The report names the
/// victim call and process, the growing directories with their creators and exact entry
/// counts, cleanup that never ran, the orphaned lockfiles and their dead owners, the fill, and
/// a purge dry run that would bring the volume back.
#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: needs git and a shell (not in the guests)"
)]
fn the_incident_report_names_victim_culprits_orphans_and_the_fix() {
    let m = Mount::tmpfs("size=12m");
    let v = m.dir.clone();
    for d in ["worktrees", "locks"] {
        std::fs::create_dir(v.join(d)).unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    for i in 0..40 {
        let d = repo.join(format!("src/m{}", i % 8));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}.rs")), vec![b'x'; 2000]).unwrap();
    }
    purge::git(&repo, &["init", "-q"]);
    purge::git(&repo, &["add", "."]);
    purge::git(&repo, &["commit", "-q", "-m", "init"]);
    let sh = work.path().join("ci-job");
    std::fs::copy("/bin/sh", &sh).unwrap();
    let cfg = purge::config(
        work.path(),
        &format!(
            "[[purge.policies]]\nname = \"worktrees\"\nroot = \"{}\"\nmatch = [\"wt-*\"]\nmin_age_secs = 1\n",
            v.join("worktrees").display()
        ),
    );
    let mut obs = Observer::start(&[
        "--config",
        cfg.to_str().unwrap(),
        // The volume's story alone: other tests' killed processes and dead lock holders
        // elsewhere on the node are not this incident's.
        "--watch-mount",
        v.to_str().unwrap(),
        "--set",
        "growth.enabled=true",
        "--set",
        "growth.interval_ms=200",
        // A small-scale incident: the orphaned lockfiles are a few entries beside hundreds of
        // worktree entries (in the real one, 11,847 beside 2,306 worktrees).
        "--set",
        "growth.culprit_min_net=2",
        "--set",
        "growth.culprit_share=0.005",
        "--set",
        "locks.check_interval_ms=100",
        "--set",
        "capacity.sample_interval_ms=200",
        "--set",
        "growth.bytes_interval_secs=1",
    ]);
    // One job: lock, worktree, artifact, pid into the lock; `hang`: killed mid-job.
    let script = r#"
        set -C
        cd "$V/locks" || exit 9
        exec 9> "job-$1.lock" || exit 3
        cd "$V/worktrees" || exit 9
        git --git-dir="$REPO/.git" worktree add -q "wt-$1" -b "b$1" >/dev/null 2>&1
        head -c "$3" /dev/zero > "wt-$1/artifact.bin" 2>/dev/null
        echo $$ >&9 || exit 4
        if [ "$2" = hang ]; then echo ready; exec sleep 600; fi
        cd "$V/locks" && exec rm -f "job-$1.lock"
    "#;
    let (mut started, mut killed, mut victim) = (0u64, Vec::new(), None);
    for i in 0..30u64 {
        started += 1;
        let hang = i % 3 == 1;
        // Near the end, the artifact fills the volume (so the worktree itself always fits:
        // a failed `worktree add` would remove what it made).
        let free = nix::sys::statvfs::statvfs(&v).unwrap();
        let free = free.blocks_available() as u64 * free.fragment_size() as u64;
        let artifact = if free < (3 << 20) { 64 << 20 } else { 1 << 20 };
        let mut c = job(
            &sh,
            script,
            &[
                &i.to_string(),
                if hang { "hang" } else { "done" },
                &artifact.to_string(),
            ],
        );
        c.env("V", &v).env("REPO", &repo);
        if hang {
            let mut child = c.stdout(std::process::Stdio::piped()).spawn().unwrap();
            let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            std::io::BufRead::read_line(&mut out, &mut line).unwrap();
            if line.trim() != "ready" {
                // It failed before hanging: the disk is full.
                let st = wait_within(&mut child, CHILD_TIMEOUT, "job");
                if st.code() == Some(4) {
                    victim = Some((i, child.id()));
                    break;
                }
                continue;
            }
            child.kill().unwrap(); // SIGKILL, mid-job: its lockfile stays
            wait_within(&mut child, CHILD_TIMEOUT, "killed job");
            killed.push((i, child.id()));
        } else {
            let mut child = c.spawn().unwrap();
            let st = wait_within(&mut child, CHILD_TIMEOUT, "job");
            if st.code() == Some(4) {
                victim = Some((i, child.id()));
                break;
            }
        }
    }
    let (vi, vpid) = victim.expect("no job's lockfile write failed with ENOSPC");
    let victim_lock = v.join(format!("locks/job-{vi}.lock"));
    obs.wait_for("the victim's ENOSPC", |e| {
        e["errno_name"] == "ENOSPC" && e["pid"].as_u64() == Some(vpid as u64)
    });
    // Every entry under the worktrees directory now (nothing removed any).
    let entries = |d: &Path| -> i64 { walk_count(d) };
    let wt_entries = entries(&v.join("worktrees"));
    let wt_bytes = walk_bytes(&v.join("worktrees"));
    let locks_left = std::fs::read_dir(v.join("locks")).unwrap().count() as u64;
    // Orphans: the killed jobs' locks and the victim's (it exited without releasing).
    let orphans = killed.len() as u64 + 1;
    assert_eq!(locks_left, orphans, "lockfiles left");
    // The purge policy takes worktrees older than a second.
    std::thread::sleep(Duration::from_millis(1100));
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    let r = loop {
        let r = obs.report("purge=true");
        let full = r["filesystems"].as_array().is_some_and(|f| {
            f.iter().any(|f| {
                f["mount"] == v.to_str().unwrap() && f["free_bytes"].as_u64() < Some(1 << 20)
            })
        });
        let ok = full
            && r["orphans"]["killed_processes"].as_array().map_or(0, |k| {
                k.iter()
                    .filter(|k| killed.iter().any(|(_, p)| k["pid"] == *p))
                    .count()
            }) == killed.len()
            && r["orphans"]["locks_holder_dead"].as_u64() == Some(orphans)
            && r["culprits"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["dir"] == v.join("worktrees").to_str().unwrap()
                        && c["net"].as_i64() == Some(wt_entries)
                        && c["bytes"]["bytes"].as_u64() == Some(wt_bytes)
                })
            });
        if ok {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "report never settled: {r:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    // The victim: the job's write to its own lockfile.
    let victims = r["victims"].as_array().unwrap();
    let vrow = victims
        .iter()
        .find(|x| {
            x["pids"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p.as_u64() == Some(vpid as u64))
        })
        .unwrap_or_else(|| panic!("victim {vpid} not named: {victims:#?}"));
    assert_eq!(vrow["comm"], "ci-job");
    assert_eq!(vrow["errno"], "ENOSPC");
    assert_eq!(vrow["syscall"], "write");
    assert_eq!(vrow["path"], victim_lock.to_str().unwrap());
    // The culprits: the worktrees (git and the jobs; every entry, none removed) and the locks.
    let wt = dir_row(&r["culprits"], v.join("worktrees").to_str().unwrap()).unwrap();
    assert_eq!(wt["removed"], 0, "{wt:#}");
    // Its bytes, measured: what `du` says (allocated bytes, every entry looked at).
    assert!(wt_bytes > 8 << 20, "{wt_bytes}");
    assert_eq!(wt["bytes"]["complete"], true, "{wt:#}");
    assert_eq!(wt["never_cleaned"], true);
    let creators: Vec<&str> = wt["creators"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["comm"].as_str())
        .collect();
    assert!(creators.contains(&"git"), "{creators:?}");
    let locks = dir_row(&r["culprits"], v.join("locks").to_str().unwrap())
        .unwrap_or_else(|| panic!("the locks directory is not named: {r:#}"));
    assert_eq!(
        locks["created"].as_u64(),
        Some(started),
        "one lockfile per job: {locks:#}"
    );
    assert_eq!(
        locks["removed"].as_u64(),
        Some(started - orphans),
        "released by finished jobs"
    );
    assert_eq!(locks["net"].as_u64(), Some(orphans));
    // The orphans: each killed job's lock, its dead owner named.
    let orphan_rows = r["orphans"]["locks"].as_array().unwrap();
    // What each killed job left: its lockfile and its artifact, none removed.
    let killed_rows = r["orphans"]["killed_processes"].as_array().unwrap();
    for (_, pid) in &killed {
        let row = killed_rows
            .iter()
            .find(|k| k["pid"].as_u64() == Some(*pid as u64))
            .unwrap_or_else(|| panic!("killed job {pid} not listed: {killed_rows:#?}"));
        assert_eq!(row["signal"], 9, "SIGKILL: {row:#}");
        assert_eq!(row["comm"], "ci-job");
        assert_eq!(
            row["entries_left"], 2,
            "its lockfile and its artifact: {row:#}"
        );
    }
    for (i, pid) in &killed {
        let row = orphan_rows
            .iter()
            .find(|l| {
                l["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(&format!("/job-{i}.lock")))
            })
            .unwrap_or_else(|| panic!("orphan job-{i}.lock missing: {orphan_rows:#?}"));
        assert_eq!(row["holder"]["pid"].as_u64(), Some(*pid as u64));
        assert_eq!(row["holder"]["comm"], "ci-job");
    }
    // The fill: full now.
    let fs = r["filesystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["mount"] == v.to_str().unwrap())
        .expect("the volume is sampled");
    assert!(fs["free_bytes"].as_u64().unwrap() < 1 << 20, "{fs:#}");
    // The fix: the dry run would remove every worktree, freeing enough to be back under 50%.
    let run = &r["fix"]["purge"]["runs"][0];
    let worktrees = std::fs::read_dir(v.join("worktrees")).unwrap().count() as u64;
    assert_eq!(
        run["would_delete"].as_u64(),
        Some(worktrees),
        "{:#}",
        r["fix"]
    );
    assert_eq!(run["deleted"], 0, "a dry run");
    let size = fs["size_bytes"].as_u64().unwrap();
    let used = size - fs["free_bytes"].as_u64().unwrap();
    assert!(
        used - run["bytes"].as_u64().unwrap() < size / 2,
        "the purge would not bring it under 50%: {run:#}"
    );
    // Markdown and JSON from the CLI, and the same from a dump.
    let md = observer_cmd(&["report", "--addr", obs.addr(), "--no-purge"]);
    assert!(
        md.status.success(),
        "{}",
        String::from_utf8_lossy(&md.stderr)
    );
    let md = String::from_utf8(md.stdout).unwrap();
    for needle in [
        "## TL;DR".to_string(),
        format!(
            "{} lock files are held by processes that have died",
            orphans
        ),
        v.join("worktrees").display().to_string(),
        "never cleaned".into(),
        victim_lock.display().to_string(),
        format!(", holds {:.1} MiB", wt_bytes as f64 / (1 << 20) as f64),
    ] {
        assert!(md.contains(&needle), "report lacks {needle:?}:\n{md}");
    }
    let dump = work.path().join("dump.jsonl");
    let out = observer_cmd(&["dump", "--addr", obs.addr(), "-o", dump.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_dump = observer_cmd(&[
        "report",
        "--from-dump",
        dump.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(
        from_dump.status.success(),
        "{}",
        String::from_utf8_lossy(&from_dump.stderr)
    );
    let d: Value = serde_json::from_slice(&from_dump.stdout).unwrap();
    assert_eq!(d["orphans"]["locks_holder_dead"].as_u64(), Some(orphans));
    assert!(dir_row(&d["culprits"], v.join("worktrees").to_str().unwrap()).is_some());
    eprintln!("{md}");
    drop(obs);
    purge::git(&repo, &["worktree", "prune"]);
}

/// Allocated bytes below `d` (and of `d` itself), as `du` counts them.
fn walk_bytes(d: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut n = std::fs::symlink_metadata(d).unwrap().blocks() * 512;
    for e in std::fs::read_dir(d).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            n += walk_bytes(&e.path());
        } else {
            n += e.metadata().unwrap().blocks() * 512;
        }
    }
    n
}

/// Entries (files, directories, links) below `d`.
fn walk_count(d: &Path) -> i64 {
    let mut n = 0;
    for e in std::fs::read_dir(d).unwrap() {
        let e = e.unwrap();
        n += 1;
        if e.file_type().unwrap().is_dir() {
            n += walk_count(&e.path());
        }
    }
    n
}
