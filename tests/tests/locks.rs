//! Lock guard on the real kernel: a holder refreshing its lock with utimensat every 100 ms,
//! heartbeats made to fail for real (EROFS through a read-only bind mount, EPERM after the lock
//! changes owner under an unprivileged holder, ENOENT after removal), a contender stealing by
//! mtime after 1 s; mkdir-style lock directories; a SIGKILLed holder; a learned lock.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{Mount, Observer, Value, http_get, observer_bin, workload_cmd};

/// A running `fsobs-workload heartbeat` (killed on drop).
struct Holder(Child);

impl Holder {
    fn start(path: &Path, mode: &str, uid: Option<u32>) -> Holder {
        let mut args = vec![
            "heartbeat".to_string(),
            path.display().to_string(),
            "100".into(),
            mode.into(),
        ];
        args.extend(uid.map(|u| u.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = workload_cmd(&args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("holder");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("pid="), "holder did not start: {line:?}");
        Holder(child)
    }

    fn pid(&self) -> u64 {
        u64::from(self.0.id())
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /locks?path=P`.
fn lock(obs: &Observer, path: &Path) -> Value {
    let (status, body) = http_get(obs.addr(), &format!("/locks?path={}", path.display()));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn wait_state(obs: &Observer, path: &Path, state: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v = lock(obs, path);
        if v["state"] == state {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{} never became {state}: {v}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `observer lock-status PATH` exit code.
fn lock_status(obs: &Observer, path: &Path) -> i32 {
    let o = std::process::Command::new(observer_bin())
        .args(["lock-status", path.to_str().unwrap(), "--addr", obs.addr()])
        .output()
        .unwrap();
    o.status.code().unwrap_or(-1)
}

fn observer_for_locks() -> Observer {
    Observer::start(&[
        "--set",
        "locks.globs=[\"**/*.lock\", \"**/*.lockdir\"]",
        "--set",
        "locks.stale_timeout_secs=1.0",
    ])
}

/// Runs the contender until it steals, checking `lock-status` while it waits; returns
/// (contender pid, steal time, whether `lock-status` answered 3 before the steal).
fn contend(obs: &Observer, lock_path: &Path, steal_path: &Path) -> (u64, u64, bool) {
    let mut contender = workload_cmd(&["contend", steal_path.to_str().unwrap(), "1000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut saw_3 = false;
    loop {
        // Only answers taken while the contender is still waiting count.
        let code = lock_status(obs, lock_path);
        if contender.try_wait().unwrap().is_some() {
            break;
        }
        saw_3 |= code == 3;
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = contender.wait_with_output().unwrap();
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
    (field("pid"), field("stolen_unix_ns"), saw_3)
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
    let holder = Holder::start(&held, "now", None);
    let v = wait_state(&obs, &held, "healthy", Duration::from_secs(20));
    assert_eq!(v["lock"]["holder"]["pid"], holder.pid());
    assert_eq!(lock_status(&obs, &held), 0);
    // The holder's view of the filesystem turns read-only: its next refresh fails (EROFS).
    view.remount_readonly();
    let v = wait_state(&obs, &held, "heartbeat-failing", Duration::from_secs(5));
    assert_eq!(v["lock"]["last_failure"]["errno_name"], "EROFS");
    // The contender steals through the writable mount of the same filesystem.
    let (contender, _, saw_3) = contend(&obs, &held, &rw_path);
    assert!(
        saw_3,
        "lock-status answered 3 while the holder was alive and failing"
    );
    let stolen = stolen_event(&mut obs, holder.pid());
    assert_flag_precedes_steal(&stolen, holder.pid(), contender, "EROFS");
}

#[test]
fn eperm_after_the_lock_changes_owner_under_an_unprivileged_holder() {
    let fs = Mount::tmpfs("size=1m,mode=0755");
    for d in fs.dir.ancestors().skip(1).take(2) {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = fs.dir.join("db.lock");
    std::fs::write(&path, b"").unwrap();
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    let mut obs = observer_for_locks();
    let holder = Holder::start(&path, "explicit", Some(65534));
    wait_state(&obs, &path, "healthy", Duration::from_secs(20));
    std::os::unix::fs::chown(&path, Some(1234), Some(1234)).unwrap();
    let v = wait_state(&obs, &path, "heartbeat-failing", Duration::from_secs(5));
    assert_eq!(v["lock"]["last_failure"]["errno_name"], "EPERM");
    let (contender, _, saw_3) = contend(&obs, &path, &path);
    assert!(
        saw_3,
        "lock-status answered 3 while the holder was alive and failing"
    );
    let stolen = stolen_event(&mut obs, holder.pid());
    assert_flag_precedes_steal(&stolen, holder.pid(), contender, "EPERM");
}

#[test]
fn removal_is_a_steal_and_the_holders_enoent_is_flagged() {
    let fs = Mount::tmpfs("size=1m");
    let path = fs.dir.join("q.lock");
    std::fs::write(&path, b"").unwrap();
    let mut obs = observer_for_locks();
    let holder = Holder::start(&path, "now", None);
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
    let holder = Holder::start(&held, "now", None);
    wait_state(&obs, &held, "healthy", Duration::from_secs(20));
    view.remount_readonly();
    wait_state(&obs, &held, "heartbeat-failing", Duration::from_secs(5));
    let (contender, _, saw_3) = contend(&obs, &held, &rw_path);
    assert!(saw_3);
    let stolen = stolen_event(&mut obs, holder.pid());
    assert_flag_precedes_steal(&stolen, holder.pid(), contender, "EROFS");
    assert_eq!(stolen["lock"]["removed_by"]["comm"], "fsobs-workload");
}

#[test]
fn a_sigkilled_holder_is_dead_within_a_second() {
    let fs = Mount::tmpfs("size=1m");
    let path = fs.dir.join("k.lock");
    std::fs::write(&path, b"").unwrap();
    let obs = observer_for_locks();
    let mut holder = Holder::start(&path, "now", None);
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
    let mut obs = Observer::start(&[]);
    let holder = Holder::start(&path, "now", None);
    let learned = obs.wait_for("learned", |v| {
        v["type"] == "lock" && v["event"] == "learned"
    });
    assert_eq!(learned["lock"]["path"], path.to_str().unwrap());
    assert_eq!(learned["lock"]["learned"], true);
    let v = wait_state(&obs, &path, "healthy", Duration::from_secs(5));
    assert_eq!(v["lock"]["holder"]["pid"], holder.pid());
    let (status, body) = http_get(obs.addr(), "/metrics");
    assert_eq!(status, 200);
    assert!(
        body.contains("fsobserver_locks{state=\"healthy\"} 1"),
        "{body}"
    );
}
