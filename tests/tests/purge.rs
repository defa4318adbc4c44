//! Emergency purge on real filesystems: the seed incident (a volume full of old worktrees makes
//! a job's open() fail with ENOSPC; the trigger fires; only stale entries go; the job's next open
//! succeeds), dry run by default, groups, the symlink-swap race, everything that must be kept
//! (mounts, open/flocked files, live owners, locked git worktrees), a 200,000-file purge that
//! leaves /healthz fast, and hostile configurations.

use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use integration_tests::*;

const DAY: i64 = 86_400;

/// Sets atime and mtime of `path` and everything below it to `secs_ago` (symlinks themselves).
fn age(path: &Path, secs_ago: i64) {
    use nix::sys::{
        stat::{UtimensatFlags, utimensat},
        time::TimeSpec,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = TimeSpec::new(now - secs_ago, 0);
    let meta = std::fs::symlink_metadata(path).expect("age: entry exists");
    if meta.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            age(&e.unwrap().path(), secs_ago);
        }
    }
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .expect("utimensat");
}

/// A directory with `n` small files.
fn tree(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("f{i}")), b"data").unwrap();
    }
}

/// Writes an observer config enabling purge with `policies` (TOML `[[purge.policies]]` tables)
/// into a directory outside every test filesystem.
fn config(dir: &Path, policies: &str) -> PathBuf {
    let path = dir.join("observer.toml");
    std::fs::write(&path, format!("[purge]\nenabled = true\n{policies}")).unwrap();
    path
}

fn start(cfg: &Path, extra: &[&str]) -> Observer {
    let mut args = vec!["--config", cfg.to_str().unwrap()];
    args.extend_from_slice(extra);
    Observer::start(&args)
}

/// A manual run of `policy` through the API; its report.
fn purge(obs: &Observer, policy: &str, execute: bool) -> Value {
    let (status, body) = http_post(
        obs.addr(),
        &format!("/purge?policy={policy}&execute={execute}"),
    );
    assert_eq!(status, 200, "POST /purge: {body}");
    let v: Value = serde_json::from_str(&body).expect("purge report is JSON");
    v["runs"][0].clone()
}

/// The item of `run` whose path ends with `suffix`.
fn item<'a>(run: &'a Value, suffix: &str) -> &'a Value {
    run["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["path"].as_str().is_some_and(|p| p.ends_with(suffix)))
        .unwrap_or_else(|| panic!("no item {suffix} in {run:#}"))
}

fn verdict(run: &Value, suffix: &str) -> (String, String) {
    let i = item(run, suffix);
    (
        i["action"].as_str().unwrap_or("").to_string(),
        i["skip"].as_str().unwrap_or("").to_string(),
    )
}

/// Waits until the background removal emptied the trash under `root`.
fn wait_trash_empty(root: &Path) {
    let trash = root.join(".fsobserver-trash");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = std::fs::read_dir(&trash).map(|d| d.count()).unwrap_or(0);
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} entries still in {}",
            trash.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count_files(dir: &Path) -> usize {
    walk(dir).len()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn seed_incident_enospc_triggers_a_purge_of_only_stale_entries() {
    if in_vm() {
        return; // userspace-only behaviour: tested on the host
    }
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
    let mut obs = start(&cfg, &["--watch-mount", m.dir.to_str().unwrap()]);
    // The job fills the last inodes and its open() fails with ENOSPC.
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
    // Oldest first until 25% of the inodes are free (4 trees of 16 inodes); younger old trees
    // stay because the target was reached, fresh ones because of their age.
    for i in 0..4 {
        assert_eq!(verdict(&run, &format!("old-{i}")).0, "deleted", "{run:#}");
        assert!(!root.join(format!("worktrees/old-{i}")).exists());
    }
    for i in 4..8 {
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
        Some(4.0),
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
fn dry_run_is_the_default_and_groups_go_together() {
    if in_vm() {
        return;
    }
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
             group = [\"{{}}.cred.sh\", \"{{}}-artifacts\"]\nmin_age_secs = 3600\n",
            root.display()
        ),
    );
    let mut obs = start(&cfg, &[]);
    let before = count_files(&root);
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
    assert_eq!(count_files(&root), before, "a dry run deletes nothing");
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
fn symlink_swaps_during_a_purge_never_reach_outside_the_root() {
    if in_vm() {
        return;
    }
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
             min_age_secs = 3600\nmax_items = 100000\n",
            root.display()
        ),
    );
    let obs = start(&cfg, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps, w) = (stop.clone(), swaps.clone(), w.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) || swaps.load(Ordering::Relaxed) < 10_000 {
                let (d, l) = (w.join(format!("d{i}")), w.join(format!("l{i}")));
                // d<i> becomes the symlink to the sentinel and back, over and over.
                let _ = nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &d,
                    nix::fcntl::AT_FDCWD,
                    &l,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                );
                swaps.fetch_add(1, Ordering::Relaxed);
                i = (i + 1) % PAIRS;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let run = purge(&obs, "race", true);
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    assert!(swaps.load(Ordering::Relaxed) >= 10_000);
    wait_trash_empty(&root);
    // The sentinel outside the root is untouched, every entry was decided and audited.
    assert_eq!(count_files(&sentinel), 20, "the sentinel was touched");
    let items = run["items"].as_array().unwrap();
    // readdir of a directory being renamed in may miss or repeat names: whatever was seen was
    // decided, and each decision is an audit event (the flight recorder holds them all).
    assert!(items.len() > PAIRS && items.len() <= 2 * PAIRS + 100, "{} items", items.len());
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
        "race: {} swaps, {deleted} deleted, {changed} caught as changed",
        swaps.load(Ordering::Relaxed)
    );
    let symlinks_skipped = items.iter().filter(|i| i["skip"] == "symlink").count();
    assert!(
        symlinks_skipped >= PAIRS / 2,
        "{symlinks_skipped} symlink skips audited"
    );
    obs.stop();
}

/// A helper process holding `file` open (and flocked); killed on drop.
struct Holder(std::process::Child, u32);

impl Holder {
    fn new(file: &Path, how: &str) -> Holder {
        use std::io::BufRead as _;
        let mut child = workload_cmd(&["hold", file.to_str().unwrap(), how, "120"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("ready=1"), "holder: {line}");
        let pid = child.id();
        Holder(child, pid)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

fn git(dir: &Path, args: &[&str]) -> bool {
    std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn mounts_open_files_locks_live_owners_and_locked_worktrees_are_kept() {
    if in_vm() {
        return;
    }
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
    let has_git = git(&repo, &["init", "-q"])
        && git(&repo, &["commit", "-q", "--allow-empty", "-m", "init"])
        && git(
            &repo,
            &["worktree", "add", "-q", w.join("wt-a").to_str().unwrap()],
        )
        && git(
            &repo,
            &["worktree", "add", "-q", w.join("wt-b").to_str().unwrap()],
        )
        && git(
            &repo,
            &["worktree", "lock", w.join("wt-b").to_str().unwrap()],
        );
    if !has_git {
        eprintln!("git unavailable: worktree checks skipped");
    }
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
             min_age_secs = 3600\n\
             [[purge.policies]]\nname = \"flock\"\nroot = \"{}\"\nmatch = [\"w/*\"]\n\
             min_age_secs = 3600\nrequire_no_open_files = false\n",
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
    if has_git {
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
    }
    drop((keeper, locker));
    obs.stop();
}

#[test]
fn a_200k_file_purge_runs_off_the_event_loop() {
    if in_vm() {
        return;
    }
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
            "[[purge.policies]]\nname = \"big\"\nroot = \"{}\"\nmatch = [\"w/*\"]\nmin_age_secs = 3600\n",
            root.display()
        ),
    );
    let obs = start(&cfg, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (stop, addr) = (stop.clone(), obs.addr().to_string());
        std::thread::spawn(move || {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let (status, _) = http_get(&addr, "/healthz");
                assert_eq!(status, 200);
                lat.push(t0.elapsed());
                std::thread::sleep(Duration::from_millis(5));
            }
            lat
        })
    };
    let run = purge(&obs, "big", true);
    assert_eq!(verdict(&run, "w/tree").0, "deleted", "{run:#}");
    assert_eq!(item(&run, "w/tree")["entries"], 200_001);
    wait_trash_empty(&root);
    stop.store(true, Ordering::Relaxed);
    let mut lat = prober.join().unwrap();
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

#[test]
fn hostile_purge_configs_are_refused_and_observation_goes_on() {
    if in_vm() {
        return;
    }
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
