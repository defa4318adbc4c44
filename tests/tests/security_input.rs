//! What watched processes control — file names, command names, worktree `.git` files, what
//! lies in the trash, which filesystems fail — cannot break the metrics, forge output, send
//! other directories to the trash or fill the dump directory; configuration sizes are bounded.

use std::{
    ffi::OsStr,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{daemon::Tail, hostile::*, purge::*, *};

/// What may not appear in any text output: a raw escape, a forged line.
fn assert_escaped(what: &str, out: &[u8]) {
    assert!(
        !out.contains(&0x1b),
        "{what} carries a raw ESC:\n{}",
        String::from_utf8_lossy(out)
    );
    let text = String::from_utf8_lossy(out);
    assert!(
        !text.lines().any(|l| l.starts_with("evil_series")),
        "{what} has a forged line:\n{text}"
    );
}

/// A copy of the workload helper whose command name (comm) is hostile.
fn hostile_workload(dir: &Path) -> PathBuf {
    let exe = dir.join("c\"\x1b[2J{x}\nevil_series 1");
    std::fs::copy(workload_bin(), &exe).unwrap();
    exe
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: the exposition and text output are userspace"
)]
fn hostile_names_neither_break_nor_forge_metrics_or_text_output() {
    let m = Mount::tmpfs("size=64M");
    let bin = tempfile::tempdir().unwrap();
    let exe = hostile_workload(bin.path());
    let evil = m.dir.join(hostile_name());
    let bad_utf8 = m.dir.join(OsStr::from_bytes(b"bad\xff\xfe\x07"));
    // A lock with a hostile name (made before the observer starts: its holder is whoever
    // refreshes it, the hostile process below).
    mkdirs(&evil);
    let lock = evil.join("x\x1b[2J\n.lock");
    std::fs::write(&lock, b"").unwrap();
    let globs = format!("locks.globs=[\"{}/**/*.lock\"]", m.dir.display());
    let mut obs = Observer::start(&[
        "--set",
        &globs,
        "--set",
        "aggregate.path_depth=1",
        "--set",
        "probes.create_sample=1",
    ]);
    let tail = Tail::start(obs.addr(), &["--no-color"]);
    std::thread::sleep(Duration::from_millis(500));
    mkdirs(&bad_utf8);
    let out = output_within(
        Command::new(&exe).arg("create-files").arg(&evil).arg("300"),
        CHILD_TIMEOUT,
    );
    assert!(out.status.success(), "create-files: {out:?}");
    // Not valid UTF-8: no command line can carry it; made from here.
    for i in 0..300 {
        std::fs::write(bad_utf8.join(format!("f{i}")), b"").unwrap();
    }
    // The hostile lock refreshed by the hostile process, then failing (its filesystem made
    // read-only): the lock guard warns in the text log.
    let mut beat = Command::new(&exe)
        .arg("heartbeat")
        .arg(&lock)
        .args(["100", "explicit"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let locks = observer_cmd(&["locks", "--addr", obs.addr()]);
    m.remount_readonly();
    std::thread::sleep(Duration::from_millis(1500));
    let _: Result<_, _> = beat.kill();
    let _: Result<_, _> = beat.wait();
    obs.barrier();

    let metrics = obs.metrics();
    let (clean, said) = promtool_check(&metrics);
    assert!(clean, "promtool check metrics: {said}");
    assert_escaped("/metrics", metrics.as_bytes());
    assert!(
        metrics.contains(r#"q\"x\\y\nevil_series{a=\"b\"} 1\n#{}\\x1b[31mred"#),
        "the hostile path is not in /metrics as an escaped label value:\n{metrics}"
    );
    let top = observer_cmd(&["top", "--once", "--addr", obs.addr()]);
    assert!(top.status.success());
    assert!(
        String::from_utf8_lossy(&top.stdout).contains("q\"x\\\\y\\nevil_series"),
        "top does not show the escaped path:\n{}",
        String::from_utf8_lossy(&top.stdout)
    );
    assert_escaped("observer top", &top.stdout);
    assert!(locks.status.success());
    assert!(
        String::from_utf8_lossy(&locks.stdout).contains(".lock"),
        "{}",
        String::from_utf8_lossy(&locks.stdout)
    );
    assert_escaped("observer locks", &locks.stdout);
    let tailed = tail.interrupt().join("\n");
    assert!(
        tailed.contains("evil_series"),
        "tail saw the creates:\n{tailed}"
    );
    assert_escaped("observer tail", tailed.as_bytes());
    let stderr = obs.stderr();
    assert!(
        stderr.contains("heartbeat"),
        "no lock-guard warning:\n{stderr}"
    );
    assert_escaped("the observer's text log", stderr.as_bytes());
}

#[test]
#[cfg_attr(fsobs_vm, ignore = "host only: purge is userspace")]
fn a_worktree_cannot_send_another_directory_to_the_trash() {
    let m = Mount::tmpfs("size=64M");
    let root = m.dir.join("root");
    let repo = root.join("repo");
    mkdirs(&repo);
    git(&repo, &["init", "-q"]);
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "init"]);
    let real = root.join("worktrees/real");
    git(&repo, &["worktree", "add", "-q", real.to_str().unwrap()]);
    // A worktree whose `.git` names a live directory of someone else's, made to point back.
    let victim = root.join("victim");
    tree(&victim, 3);
    let evil = root.join("worktrees/evil");
    tree(&evil, 1);
    std::fs::write(evil.join(".git"), format!("gitdir: {}\n", victim.display())).unwrap();
    std::fs::write(
        victim.join("gitdir"),
        format!("{}\n", evil.join(".git").display()),
    )
    .unwrap();
    age(&root.join("worktrees"), 5 * DAY);
    age(&repo, 5 * DAY);
    let _open = Holder::new(&victim.join("f0"), "open");
    let cfgdir = tempfile::tempdir().unwrap();
    let cfg = config(
        cfgdir.path(),
        &format!(
            "[[purge.policies]]\nname = \"wt\"\nroot = \"{}\"\nmatch = [\"worktrees/*\"]\n\
             min_age_secs = 3600\nexecute = true\nmanual_execute = true\n",
            root.display()
        ),
    );
    let obs = start(&cfg, &[]);
    let run = purge(&obs, "wt", true);
    assert_eq!(verdict(&run, "worktrees/real").0, "deleted", "{run:#}");
    let reason = item(&run, "worktrees/real")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("pruned"), "{reason}");
    assert_eq!(verdict(&run, "worktrees/evil").0, "deleted", "{run:#}");
    let reason = item(&run, "worktrees/evil")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("left"), "{reason}");
    wait_trash_empty(&root);
    for f in ["f0", "f1", "f2", "gitdir"] {
        assert!(victim.join(f).exists(), "victim/{f} was deleted");
    }
    assert!(
        !repo.join(".git/worktrees/real").exists(),
        "the real admin entry stayed"
    );
}

fn trash_root(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("root");
    tree(&root.join("jobs/old"), 2);
    age(&root, 5 * DAY);
    let trash = root.join(".fsobserver-trash");
    (root, trash)
}

fn policy(root: &Path, keys: &str) -> String {
    format!(
        "[[purge.policies]]\nname = \"p\"\nroot = \"{}\"\nmatch = [\"jobs/*\"]\n\
         min_age_secs = 3600\n{keys}\n",
        root.display()
    )
}

#[test]
#[cfg_attr(fsobs_vm, ignore = "host only: purge is userspace")]
fn the_trash_only_ever_loses_what_purge_moved_there() {
    use std::os::unix::fs::PermissionsExt as _;
    let m = Mount::tmpfs("size=64M");
    let cfgdir = tempfile::tempdir().unwrap();
    // A dry-run-only setup: the trash is neither made nor emptied.
    let (root, trash) = trash_root(&m.dir.join("a"));
    std::fs::create_dir(&trash).unwrap();
    std::fs::set_permissions(&trash, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(trash.join("precious"), b"not purge's").unwrap();
    let obs = start(
        &config(cfgdir.path(), &policy(&root, "execute = false")),
        &[],
    );
    let run = purge(&obs, "p", false);
    assert_eq!(verdict(&run, "jobs/old").0, "would-delete");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        trash.join("precious").exists(),
        "a dry-run setup emptied the trash"
    );
    drop(obs);
    // Executing: what purge moves goes, what it did not move stays.
    let obs = start(
        &config(
            cfgdir.path(),
            &policy(&root, "execute = true\nmanual_execute = true"),
        ),
        &[],
    );
    let run = purge(&obs, "p", true);
    assert_eq!(verdict(&run, "jobs/old").0, "deleted", "{run:#}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&trash).unwrap().count() > 1 {
        assert!(
            Instant::now() < deadline,
            "the trash was not emptied of purge's entry"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        trash.join("precious").exists(),
        "purge removed an entry it did not move"
    );
    drop(obs);
    // A trash that is not purge's own: refused, and the policy is off.
    type MakeTrash<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, MakeTrash<'_>); 3] = [
        ("owned by another user", &|t: &Path| {
            std::fs::create_dir(t).unwrap();
            nix::unistd::chown(t, Some(65534.into()), None).unwrap();
        }),
        ("open to others", &|t: &Path| {
            std::fs::create_dir(t).unwrap();
            std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o777)).unwrap();
        }),
        ("a symlink", &|t: &Path| {
            let elsewhere = t.with_file_name("elsewhere");
            std::fs::create_dir(&elsewhere).unwrap();
            std::os::unix::fs::symlink(&elsewhere, t).unwrap();
        }),
    ];
    for (i, (what, make)) in cases.iter().enumerate() {
        let (root, trash) = trash_root(&m.dir.join(format!("case{i}")));
        make(&trash);
        let obs = start(
            &config(
                cfgdir.path(),
                &policy(&root, "execute = true\nmanual_execute = true"),
            ),
            &[],
        );
        let (code, body) = http_post(obs.addr(), "/purge?policy=p&execute=true");
        assert_ne!(code, 200, "a trash {what} was used: {body}");
        assert!(
            obs.stderr().contains("trash") && body.contains("trash"),
            "a trash {what}: {body}\n{}",
            obs.stderr()
        );
        assert!(
            root.join("jobs/old/f0").exists(),
            "deleted with a trash {what}"
        );
    }
}

#[test]
#[cfg_attr(fsobs_vm, ignore = "host only: burst dumps are userspace")]
fn burst_dumps_come_only_from_watched_filesystems_and_are_retained() {
    let watched = Mount::tmpfs("size=1M");
    let dumps = tempfile::tempdir().unwrap();
    let watch = format!("filters.watch_mounts=[\"{}\"]", watched.dir.display());
    let dir = format!("recorder.dump_dir=\"{}\"", dumps.path().display());
    let obs = Observer::start(&[
        "--set",
        &watch,
        "--set",
        &dir,
        "--set",
        "recorder.burst_errors=5",
        "--set",
        "recorder.burst_cooldown_secs=1",
        "--set",
        "recorder.dump_max_files=2",
        "--set",
        "recorder.dump_max_bytes=10000000",
    ]);
    // Any container can fail writes on /dev/full: not a watched filesystem, no dump.
    for _ in 0..3 {
        workload(&["fail-writes", "/dev/full", "50"]);
        std::thread::sleep(Duration::from_millis(1100));
    }
    let files = || -> Vec<_> {
        std::fs::read_dir(dumps.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .collect()
    };
    assert!(files().is_empty(), "/dev/full made {} dumps", files().len());
    // Bursts on the watched filesystem: dumps, at most the retained number.
    let f = watched.path("fill");
    workload(&["fill", &f]);
    for _ in 0..4 {
        workload(&["fail-writes", &f, "50"]);
        std::thread::sleep(Duration::from_millis(1500));
    }
    let metrics = obs.metrics();
    let written = metric_value(&metrics, "fsobserver_dumps_total{result=\"written\"}");
    assert!(written.is_some_and(|n| n >= 3.0), "{metrics}");
    let kept = files();
    assert_eq!(kept.len(), 2, "dump_max_files = 2 but {} kept", kept.len());
    assert!(kept.iter().sum::<u64>() <= 10_000_000);
}

#[test]
#[cfg_attr(fsobs_vm, ignore = "host only: configuration checks are userspace")]
fn configuration_sizes_are_bounded_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    for key in [
        "aggregate.max_paths",
        "aggregate.max_processes",
        "aggregate.max_workloads",
        "aggregate.top_k",
        "recorder.max_events",
        "recorder.max_bytes",
        "recorder.snapshot_secs",
        "http.stream_buffer",
        "locks.max_locks",
        "pipeline.queue_capacity",
    ] {
        let (section, name) = key.split_once('.').unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, format!("[{section}]\n{name} = 1000000000000\n")).unwrap();
        let t = Instant::now();
        let out = observer_cmd(&["config", "check", cfg.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{key}: {err}");
        assert!(
            err.contains(key) && err.contains("at most") && err.lines().count() == 1,
            "{key}: {err}"
        );
        let out = output_within(
            Command::new(observer_bin()).args([
                "run",
                "--listen",
                "",
                "--set",
                &format!("{key}=1000000000000"),
            ]),
            Duration::from_secs(30),
        );
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "run --set {key}: {err}");
        assert!(t.elapsed() < Duration::from_secs(20), "{key}");
    }
}
