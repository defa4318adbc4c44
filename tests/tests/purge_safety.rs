//! Purge safety on real filesystems: symlinks swapped in during a run never lead outside the
//! root; mounts, open or flocked files, live owners, locks with a live holder and locked git
//! worktrees are kept; hostile configurations are refused while observation goes on.

use std::{
    os::unix::fs::symlink,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use integration_tests::*;

use integration_tests::purge::*;

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: userspace behaviour, the same on every kernel"
)]
fn symlink_swaps_during_a_purge_never_reach_outside_the_root() {
    const PAIRS: usize = 1500;
    let m = Mount::tmpfs("size=64M");
    let root = m.dir.join("root");
    let sentinel = m.dir.join("sentinel");
    tree(&sentinel, 20);
    let w = root.join("w");
    for i in 0..PAIRS {
        tree(&w.join(format!("d{i}")), 4);
        symlink(&sentinel, w.join(format!("l{i}"))).unwrap();
    }
    age(&root, 5 * DAY);
    let cfgdir = tempfile::tempdir().unwrap();
    let cfg = config(
        cfgdir.path(),
        &format!(
            "[[purge.policies]]\nname = \"race\"\nroot = \"{}\"\nmatch = [\"w/*\"]\n\
             min_age_secs = 3600\nmax_items = 100000\nexecute = true\nmanual_execute = true\n",
            root.display()
        ),
    );
    // This filesystem only: the flight recorder then holds every audit event of the run,
    // whatever fails elsewhere on the node meanwhile.
    let obs = start(&cfg, &["--watch-mount", m.dir.to_str().unwrap()]);
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps, w) = (stop.clone(), swaps.clone(), w.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (d, l) = (w.join(format!("d{i}")), w.join(format!("l{i}")));
                // d<i> becomes the symlink to the sentinel and back, over and over. Only
                // exchanges that happened count (one side already in the trash fails).
                if nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &d,
                    nix::fcntl::AT_FDCWD,
                    &l,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                )
                .is_ok()
                {
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
                i = (i + 1) % PAIRS;
            }
        })
    };
    while swaps.load(Ordering::Relaxed) < 100 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let before = swaps.load(Ordering::Relaxed);
    let run = purge(&obs, "race", true);
    let during = swaps.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    // The race is real only if entries really changed under the purge while it decided.
    assert!(
        during >= 2_000,
        "only {during} exchanges happened while the purge ran"
    );
    wait_trash_empty(&root);
    // The sentinel outside the root is untouched, every entry was decided and audited.
    assert_eq!(count_files(&sentinel), 20, "the sentinel was touched");
    let items = run["items"].as_array().unwrap();
    // readdir of a directory being renamed in may miss or repeat names (tmpfs on newer kernels
    // gives a renamed entry a fresh directory offset, so each exchange can show both names
    // again): whatever was seen was decided, and each decision is an audit event (the flight
    // recorder holds them all). More than the names plus two per exchange would be a loop.
    assert!(
        items.len() > PAIRS && items.len() as u64 <= 2 * PAIRS as u64 + 2 * during,
        "{} items ({during} exchanges during the run)",
        items.len()
    );
    let (_, dump) = obs.http("/dump");
    let audited = dump
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "purge" && v["run_id"] == run["run_id"])
        .count();
    assert_eq!(audited, items.len(), "one audit event per decision");
    let mut deleted = 0;
    for it in items {
        match it["action"].as_str().unwrap() {
            "deleted" => deleted += 1,
            "skipped" => assert!(
                matches!(it["skip"].as_str(), Some("symlink" | "changed")),
                "unexpected skip {it}"
            ),
            other => panic!("action {other}: {it}"),
        }
    }
    assert!(deleted > 0, "nothing was deleted: {run:#}");
    let changed = items.iter().filter(|i| i["skip"] == "changed").count();
    eprintln!(
        "race: {during} exchanges during the run, {deleted} deleted, {changed} caught as changed"
    );
    // Decisions follow what an entry is when it is checked, not its name: names made as
    // directories were found as symlinks and names made as symlinks were deleted as directories.
    let name_of = |i: &Value| {
        let p = i["path"].as_str().unwrap();
        p.rsplit('/').next().unwrap().chars().next().unwrap()
    };
    let swapped_in = items
        .iter()
        .filter(|i| i["skip"] == "symlink" && name_of(i) == 'd')
        .count();
    let swapped_out = items
        .iter()
        .filter(|i| i["action"] == "deleted" && name_of(i) == 'l')
        .count();
    assert!(
        swapped_in > 0 && swapped_out > 0,
        "the purge never met a swapped entry (d* skipped as symlink: {swapped_in}, l* deleted: {swapped_out})"
    );
    obs.stop();
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: userspace behaviour, the same on every kernel"
)]
fn mounts_open_files_locks_live_owners_and_locked_worktrees_are_kept() {
    let m = Mount::tmpfs("size=32M");
    let root = m.dir.join("r");
    let w = root.join("w");
    let outside = m.dir.join("outside");
    tree(&outside, 3);
    tree(&w.join("bound/mnt"), 0);
    tree(&w.join("open"), 2);
    tree(&w.join("owner"), 1);
    tree(&w.join("deadowner"), 1);
    tree(&root.join("locks"), 0);
    let keeper = Holder::new(&w.join("open/f0"), "open");
    std::fs::write(w.join("owner/app.pid"), format!("{}\n", keeper.1)).unwrap();
    std::fs::write(w.join("deadowner/app.lock"), format!("{}\n", dead_pid())).unwrap();
    std::fs::write(root.join("locks/live.lock"), format!("{}", keeper.1)).unwrap();
    std::fs::write(root.join("locks/dead.lock"), format!("{}", dead_pid())).unwrap();
    // Git worktrees: one plain, one `git worktree lock`ed.
    let repo = root.join("repos/main");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "init"]);
    for wt in ["wt-a", "wt-b"] {
        git(
            &repo,
            &["worktree", "add", "-q", w.join(wt).to_str().unwrap()],
        );
    }
    git(
        &repo,
        &["worktree", "lock", w.join("wt-b").to_str().unwrap()],
    );
    // A second root where only file locks count (open files are allowed).
    let root2 = m.dir.join("r2");
    tree(&root2.join("w/flocked"), 1);
    let locker = Holder::new(&root2.join("w/flocked/f0"), "flock");
    age(&root, 10 * DAY);
    age(&root2, 10 * DAY);
    let _bind = Mount::bind_at(&outside, &w.join("bound/mnt"));
    let cfgdir = tempfile::tempdir().unwrap();
    let cfg = config(
        cfgdir.path(),
        &format!(
            "[[purge.policies]]\nname = \"keep\"\nroot = \"{}\"\nmatch = [\"w/*\", \"locks/*.lock\"]\n\
             min_age_secs = 3600\nexecute = true\nmanual_execute = true\n\
             [[purge.policies]]\nname = \"flock\"\nroot = \"{}\"\nmatch = [\"w/*\"]\n\
             min_age_secs = 3600\nrequire_no_open_files = false\nexecute = true\n\
             manual_execute = true\n",
            root.display(),
            root2.display()
        ),
    );
    let obs = start(&cfg, &[]);
    let run = purge(&obs, "keep", true);
    let run2 = purge(&obs, "flock", true);
    wait_trash_empty(&root);
    let kept = |run: &Value, e: &str, why: &str| {
        assert_eq!(
            verdict(run, e),
            ("skipped".into(), why.into()),
            "{e}: {run:#}"
        );
    };
    kept(&run, "w/bound", "mount");
    assert_eq!(count_files(&outside), 3, "the bind mount was crossed");
    kept(&run, "w/open", "open-files");
    kept(&run, "w/owner", "owner-alive");
    kept(&run, "locks/live.lock", "owner-alive");
    kept(&run2, "w/flocked", "file-locked");
    for gone in ["w/deadowner", "locks/dead.lock"] {
        assert_eq!(verdict(&run, gone).0, "deleted", "{gone}: {run:#}");
        assert!(!root.join(gone).exists(), "{gone}");
    }
    for stays in ["w/bound", "w/open", "w/owner", "locks/live.lock"] {
        assert!(root.join(stays).exists(), "{stays}");
    }
    assert!(root2.join("w/flocked/f0").exists());
    kept(&run, "w/wt-b", "git-worktree-locked");
    let (action, _) = verdict(&run, "w/wt-a");
    assert_eq!(action, "deleted");
    assert!(
        item(&run, "w/wt-a")["reason"]
            .as_str()
            .unwrap()
            .contains("git admin entry"),
        "{run:#}"
    );
    assert!(!w.join("wt-a").exists());
    assert!(
        !repo.join(".git/worktrees/wt-a").exists(),
        "admin entry pruned"
    );
    assert!(repo.join(".git/worktrees/wt-b").exists());
    assert!(w.join("wt-b").exists(), "the locked worktree stays");
    drop((keeper, locker));
    obs.stop();
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: userspace behaviour, the same on every kernel"
)]
fn hostile_purge_configs_are_refused_and_observation_goes_on() {
    let d = tempfile::tempdir().unwrap();
    let real = d.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = d.path().join("link");
    symlink(&real, &link).unwrap();
    let policy = |root: &str, extra: &str| {
        format!(
            "[[purge.policies]]\nname = \"p\"\nroot = \"{root}\"\nmatch = [\"w/*\"]\nmin_age_secs = 60\n{extra}"
        )
    };
    let cases = [
        (policy("/", ""), "filesystem root"),
        (policy(&format!("{}/../real", real.display()), ""), "'..'"),
        (policy(link.to_str().unwrap(), ""), "symlink"),
        (
            policy(real.to_str().unwrap(), "").replace("min_age_secs = 60", "min_age_secs = 0"),
            "min_age_secs",
        ),
        (String::new(), "no policies"),
        (
            policy(real.to_str().unwrap(), "").replace("w/*", "../*"),
            "'..'",
        ),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let dir = d.path().join(format!("c{i}"));
        std::fs::create_dir(&dir).unwrap();
        let cfg = config(&dir, body);
        let out = observer_cmd(&["config", "check", cfg.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {i}: {err}");
        assert!(err.contains(want), "case {i}: want {want:?} in {err}");
    }
    // The daemon with a refused purge section observes as usual, purge off.
    let m = Mount::tmpfs("size=1M");
    let dir = d.path().join("run");
    std::fs::create_dir(&dir).unwrap();
    let cfg = config(&dir, &policy("/", ""));
    let mut obs = start(&cfg, &[]);
    assert!(
        obs.stderr()
            .contains("purge is disabled, observation continues"),
        "{}",
        obs.stderr()
    );
    let (status, body) = http_post(obs.addr(), "/purge?execute=true");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("filesystem root"), "{body}");
    let fill = workload(&["fill", &m.path("f")]);
    obs.wait_for("ENOSPC still observed", |v| {
        v["type"] == "syscall" && v["pid"] == fill.pid() && v["errno"] == 28
    });
    assert_eq!(
        metric_value(&obs.metrics(), "fsobserver_purge_enabled"),
        Some(0.0)
    );
    obs.stop();
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: userspace behaviour, the same on every kernel"
)]
fn a_lock_whose_holder_the_lock_guard_sees_alive_is_kept() {
    let m = Mount::tmpfs("size=8M");
    let root = m.dir.join("r");
    std::fs::create_dir_all(root.join("locks")).unwrap();
    let lock = root.join("locks/job.lock");
    std::fs::write(&lock, b"").unwrap();
    let cfgdir = tempfile::tempdir().unwrap();
    let cfg = config(
        cfgdir.path(),
        &format!(
            "[[purge.policies]]\nname = \"locks\"\nroot = \"{}\"\nmatch = [\"locks/*.lock\"]\n\
             min_age_secs = 3600\nexecute = true\nmanual_execute = true\n",
            root.display()
        ),
    );
    let mut obs = start(&cfg, &["--set", "locks.globs=[\"**/locks/*.lock\"]"]);
    let mut holder = workload_cmd(&["heartbeat", lock.to_str().unwrap(), "100", "now"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    obs.wait_for("the lock guard tracks the lock", |v| {
        v["type"] == "lock" && v["lock"]["path"] == lock.to_str().unwrap()
    });
    let run = purge(&obs, "locks", true);
    assert_eq!(
        verdict(&run, "locks/job.lock"),
        ("skipped".into(), "lock-holder-alive".into()),
        "{run:#}"
    );
    holder.kill().unwrap();
    wait_within(&mut holder, CHILD_TIMEOUT, "heartbeat holder");
    // The holder is gone: the guard no longer protects it (its mtime still does, for an hour).
    std::thread::sleep(Duration::from_millis(600));
    let run = purge(&obs, "locks", false);
    assert_eq!(verdict(&run, "locks/job.lock").1, "too-young", "{run:#}");
    assert!(lock.exists());
    obs.stop();
}
