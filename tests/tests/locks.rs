//! Lock guard on the real kernel: a holder refreshing its lock with utimensat every 100 ms,
//! heartbeats made to fail for real (EROFS through a read-only bind mount, EPERM after the lock
//! changes owner under an unprivileged holder, ENOENT after removal), a contender stealing by
//! mtime after 1 s; mkdir-style lock directories; a SIGKILLed holder; a learned lock.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use integration_tests::{
    CHILD_TIMEOUT, Mount, Observer, Value, http_get,
    locks::{Holder, lock, lock_status, wait_lock},
    metric_value, spawn_ready, workload_cmd,
};

/// A running `fsobs-workload heartbeat` (killed on drop).
fn start_holder(path: &Path, mode: &str, uid: Option<u32>) -> Holder {
    let mut args = vec![
        "heartbeat".to_string(),
        path.display().to_string(),
        "100".into(),
        mode.into(),
    ];
    args.extend(uid.map(|u| u.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (child, line) = spawn_ready(&mut workload_cmd(&args));
    assert!(line.starts_with("pid="), "holder did not start: {line:?}");
    Holder(child)
}

fn wait_state(obs: &Observer, path: &Path, state: &str, within: Duration) -> Value {
    wait_lock(obs, path, &format!("never became {state}"), within, |v| {
        v["state"] == state
    })
}

fn observer_for_locks() -> std::sync::MutexGuard<'static, Observer> {
    Observer::shared(&[
        "--set",
        "locks.globs=[\"**/*.lock\", \"**/*.lockdir\"]",
        "--set",
        "locks.stale_timeout_secs=1.0",
    ])
}

/// What a steal race showed.
struct Race {
    contender: u64,
    /// When the contender decided to steal (wall clock, just before its unlink/rmdir).
    decided_unix_ns: u64,
    /// When `/locks` first showed the lock `heartbeat-failing` (wall clock).
    flagged_unix_ns: u64,
    /// When `lock-status` first answered 3 (wall clock).
    status_3_unix_ns: u64,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A real race: a contender polls `steal_path`'s mtime on its own schedule and steals once it
/// is 1 s stale; it starts while the holder is healthy, then `fail` makes the holder's
/// refreshes fail. Meanwhile `/locks` and `lock-status` are polled, so the test sees when the
/// observer flagged the lock, against when the contender decided to steal.
fn race(obs: &Observer, lock_path: &Path, steal_path: &Path, fail: impl FnOnce()) -> Race {
    let mut contender = workload_cmd(&["contend", steal_path.to_str().unwrap(), "1000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The contender is polling a fresh mtime before the failure starts.
    std::thread::sleep(Duration::from_millis(300));
    fail();
    let (mut flagged, mut status_3) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while contender.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the contender never stole the lock"
        );
        if flagged.is_none() && lock(obs, lock_path)["state"] == "heartbeat-failing" {
            flagged = Some(now_ns());
        }
        if status_3.is_none() && lock_status(obs, lock_path) == 3 {
            status_3 = Some(now_ns());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = integration_tests::output_of(contender, CHILD_TIMEOUT, "contender");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("errno=0"),
        "the contender could not steal: {text}"
    );
    let field = |k: &str| -> u64 {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {text:?}"))
    };
    Race {
        contender: field("pid"),
        decided_unix_ns: field("decided_unix_ns"),
        flagged_unix_ns: flagged.expect("/locks never showed heartbeat-failing before the steal"),
        status_3_unix_ns: status_3.expect("lock-status never answered 3 before the steal"),
    }
}

impl Race {
    /// The observer flagged the failing holder, and `lock-status` said "do not steal", before
    /// the contender decided to steal.
    fn assert_flagged_first(&self) {
        assert!(
            self.flagged_unix_ns < self.decided_unix_ns,
            "flagged {} ms after the steal decision",
            (self.flagged_unix_ns as i64 - self.decided_unix_ns as i64) / 1_000_000
        );
        assert!(self.status_3_unix_ns < self.decided_unix_ns);
        eprintln!(
            "flagged {} ms before the contender decided to steal",
            (self.decided_unix_ns - self.flagged_unix_ns) / 1_000_000
        );
    }
}

/// The `lock-stolen` event for `holder`, from the observer's stdout.
fn stolen_event(obs: &mut Observer, holder: u64) -> Value {
    obs.wait_for("lock-stolen", |v| {
        v["type"] == "lock" && v["event"] == "lock-stolen" && v["lock"]["holder"]["pid"] == holder
    })
}

/// The common assertions of a steal after a failing heartbeat.
fn assert_flag_precedes_steal(stolen: &Value, holder: u64, contender: u64, errno: &str) {
    let l = &stolen["lock"];
    assert_eq!(stolen["severity"], "critical");
    assert_eq!(l["holder"]["pid"], holder, "{stolen}");
    assert_eq!(l["removed_by"]["pid"], contender, "{stolen}");
    // The failure that made the lock look stale (the holder's refresh racing the removal may
    // already have failed again with ENOENT: that is `last_failure`).
    assert_eq!(l["first_failure"]["errno_name"], errno, "{stolen}");
    let last = l["last_failure"]["errno_name"].as_str().unwrap();
    assert!(last == errno || last == "ENOENT", "{stolen}");
    let failing = l["failing_since_unix_ns"].as_u64().expect("failing_since");
    let steal = stolen["time_unix_ns"].as_u64().unwrap();
    assert!(
        failing < steal,
        "heartbeat-failing ({failing}) must precede the steal ({steal})"
    );
}

#[test]
fn erofs_heartbeat_failure_is_flagged_before_a_contender_steals() {
    let fs = Mount::tmpfs("size=1m");
    std::fs::create_dir(fs.dir.join("locks")).unwrap();
    let rw_path = fs.dir.join("locks/job.lock");
    std::fs::write(&rw_path, b"").unwrap();
    let view = Mount::bind(&fs.dir);
    let held = view.dir.join("locks/job.lock");
    let mut obs = observer_for_locks();
    let holder = start_holder(&held, "now", None);
    let v = wait_state(&obs, &held, "healthy", Duration::from_secs(20));
    assert_eq!(v["lock"]["holder"]["pid"], holder.pid());
    assert_eq!(lock_status(&obs, &held), 0);
    // The contender polls through the writable mount of the same filesystem; then the holder's
    // view turns read-only: its next refresh fails (EROFS).
    let r = race(&obs, &held, &rw_path, || view.remount_readonly());
    r.assert_flagged_first();
    let stolen = stolen_event(&mut obs, holder.pid());
    assert_flag_precedes_steal(&stolen, holder.pid(), r.contender, "EROFS");
}

#[test]
fn eperm_after_the_lock_changes_owner_under_an_unprivileged_holder() {
    let fs = Mount::tmpfs("size=1m,mode=0755");
    // The unprivileged holder must reach the mount: open up the temporary directory the test
    // made around it (0700 from tempfile), and nothing above it (/tmp is the machine's).
    let base = fs.dir.parent().unwrap();
    assert!(
        base.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("fsobs-test-")
    );
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = fs.dir.join("db.lock");
    std::fs::write(&path, b"").unwrap();
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    let mut obs = observer_for_locks();
    let holder = start_holder(&path, "explicit", Some(65534));
    wait_state(&obs, &path, "healthy", Duration::from_secs(20));
    let r = race(&obs, &path, &path, || {
        std::os::unix::fs::chown(&path, Some(1234), Some(1234)).unwrap()
    });
    r.assert_flagged_first();
    let stolen = stolen_event(&mut obs, holder.pid());
    assert_flag_precedes_steal(&stolen, holder.pid(), r.contender, "EPERM");
}

#[test]
fn removal_is_a_steal_and_the_holders_enoent_is_flagged() {
    let fs = Mount::tmpfs("size=1m");
    let path = fs.dir.join("q.lock");
    std::fs::write(&path, b"").unwrap();
    let mut obs = observer_for_locks();
    let holder = start_holder(&path, "now", None);
    wait_state(&obs, &path, "healthy", Duration::from_secs(20));
    std::fs::remove_file(&path).unwrap();
    let stolen = stolen_event(&mut obs, holder.pid());
    assert_eq!(
        stolen["lock"]["removed_by"]["pid"],
        u64::from(std::process::id())
    );
    let v = wait_state(&obs, &path, "heartbeat-failing", Duration::from_secs(5));
    assert_eq!(v["lock"]["last_failure"]["errno_name"], "ENOENT");
    assert_eq!(
        lock_status(&obs, &path),
        3,
        "holder alive, lock gone: do not steal"
    );
}

#[test]
fn a_mkdir_style_lock_directory_is_guarded_the_same_way() {
    let fs = Mount::tmpfs("size=1m");
    let rw_path = fs.dir.join("build.lockdir");
    std::fs::create_dir(&rw_path).unwrap();
    let view = Mount::bind(&fs.dir);
    let held = view.dir.join("build.lockdir");
    let mut obs = observer_for_locks();
    let holder = start_holder(&held, "now", None);
    wait_state(&obs, &held, "healthy", Duration::from_secs(20));
    let r = race(&obs, &held, &rw_path, || view.remount_readonly());
    r.assert_flagged_first();
    let stolen = stolen_event(&mut obs, holder.pid());
    assert_flag_precedes_steal(&stolen, holder.pid(), r.contender, "EROFS");
    assert_eq!(stolen["lock"]["removed_by"]["comm"], "fsobs-workload");
}

#[test]
fn a_sigkilled_holder_is_dead_within_a_second() {
    let fs = Mount::tmpfs("size=1m");
    let path = fs.dir.join("k.lock");
    std::fs::write(&path, b"").unwrap();
    let obs = observer_for_locks();
    let mut holder = start_holder(&path, "now", None);
    wait_state(&obs, &path, "healthy", Duration::from_secs(20));
    holder.0.kill().unwrap(); // SIGKILL; left unreaped (a zombie) on purpose
    let killed = Instant::now();
    wait_state(&obs, &path, "holder-dead", Duration::from_secs(1));
    eprintln!(
        "holder-dead {} ms after SIGKILL",
        killed.elapsed().as_millis()
    );
    assert_eq!(lock_status(&obs, &path), 4, "safe to steal");
}

#[test]
fn a_steady_heartbeat_is_learned_without_a_glob() {
    let fs = Mount::tmpfs("size=1m");
    let path = fs.dir.join("worker.pid");
    std::fs::write(&path, b"").unwrap();
    let mut obs = Observer::shared(&[]);
    let holder = start_holder(&path, "now", None);
    // Other processes on the node (other tests' holders) may be learned too: this path's.
    let learned = obs.wait_for("learned", |v| {
        v["type"] == "lock"
            && v["event"] == "learned"
            && v["lock"]["path"] == path.to_str().unwrap()
    });
    assert_eq!(learned["lock"]["learned"], true);
    let v = wait_state(&obs, &path, "healthy", Duration::from_secs(5));
    assert_eq!(v["lock"]["holder"]["pid"], holder.pid());
    let (status, body) = http_get(obs.addr(), "/metrics");
    assert_eq!(status, 200);
    // A node-wide gauge: this lock is one of the healthy ones.
    assert!(
        metric_value(&body, "fsobserver_locks{state=\"healthy\"}").is_some_and(|n| n >= 1.0),
        "{body}"
    );
}

#[test]
fn lock_names_are_known_from_their_acquisition_with_no_glob() {
    let fs = Mount::tmpfs("size=1m");
    let obs = Observer::shared(&[]);
    let me = u64::from(std::process::id());
    // mkdir of a lock name, an O_CREAT|O_EXCL open of another, a link to a third; a directory
    // with another name and a plain O_TRUNC create of a lock name are not acquisitions.
    let dir_lock = fs.dir.join("build.lock");
    std::fs::create_dir(&dir_lock).unwrap();
    let excl = fs.dir.join("db.lck");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&excl)
        .unwrap();
    let linked = fs.dir.join("LOCK");
    std::fs::hard_link(&excl, &linked).unwrap();
    let plain_dir = fs.dir.join("build.d");
    std::fs::create_dir(&plain_dir).unwrap();
    let trunc = fs.dir.join("trunc.lock");
    std::fs::write(&trunc, b"").unwrap();
    for (path, how) in [
        (&dir_lock, "mkdir"),
        (&excl, "create-excl"),
        (&linked, "link"),
    ] {
        let v = wait_lock(&obs, path, "known", Duration::from_secs(10), |v| {
            v["known"] == true
        });
        assert_eq!(v["lock"]["acquired_by"], how, "{v}");
        assert_eq!(v["lock"]["holder"]["pid"], me, "{v}");
        assert_eq!(v["lock"]["known_by"], "convention", "{v}");
        assert_eq!(v["state"], "healthy", "{v}");
    }
    for path in [&plain_dir, &trunc] {
        let v = lock(&obs, path);
        assert_eq!(v["known"], false, "{v}");
    }
    // A lock name nobody acquired or refreshed: unknown, and the answer says why.
    let v = lock(&obs, &trunc);
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|r| r.contains("lock name by convention")),
        "{v}"
    );
    assert_eq!(lock_status(&obs, &trunc), 5);
}
