//! The lock guard with a real lock library, default configuration (no globs): proper-lockfile
//! (npm, pinned in `tests/node`, installed by the test command) takes a mkdir lock
//! (`FILE.lock`) and refreshes it with `utimes` every second, stale after 2 s; the holder runs
//! unprivileged; its refresh is made to fail for real (EPERM: the lock changes owner; EROFS: the
//! holder's view of the filesystem turns read-only; ENOSPC: a filesystem whose metadata updates
//! fail when full, through FUSE) after no refresh at all, after one and after ten; a second proper-lockfile process waits for the lock and takes it once it looks stale.
//! Also: another process's failed touch of a held lock, and a process that made 200 lock-named
//! directories and exited.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    CHILD_TIMEOUT, Mount, Observer, Value,
    fullfs::FullFs,
    http_get,
    locks::{Holder, lock, lock_status, wait_lock},
};

const NOBODY: u32 = 65534;

fn node_modules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/node/node_modules")
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("node")
        .join(name)
}

/// `node SCRIPT FILE`, as `uid` when given; its first stdout line.
fn node(name: &str, file: &Path, uid: Option<u32>) -> (Child, String) {
    assert!(
        node_modules().join("proper-lockfile").exists(),
        "proper-lockfile is not installed in {} (the test command installs it)",
        node_modules().display()
    );
    let mut cmd = match uid {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={u}"))
                .arg(format!("--regid={u}"))
                .arg("--clear-groups")
                .arg("node");
            c
        }
        None => Command::new("node"),
    };
    let mut child = cmd
        .arg(script(name))
        .arg(file)
        .env("NODE_PATH", node_modules())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node (the test command installs nodejs)");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

/// The lock holder (unprivileged; killed on drop).
fn start_holder(file: &Path) -> Holder {
    let (child, line) = node("holder.js", file, Some(NOBODY));
    assert!(line.starts_with("pid="), "holder did not lock: {line:?}");
    Holder(child)
}

fn field(text: &str, key: &str) -> u64 {
    text.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {text:?}"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A tmpfs an unprivileged process can reach, with a world-writable `jobs` directory.
fn jobs_fs() -> (Mount, PathBuf) {
    let fs = Mount::tmpfs("size=4m,mode=0755");
    // Open up the temporary directory the test made around the mount (0700 from tempfile),
    // and nothing above it (/tmp is the machine's).
    let base = fs.dir.parent().unwrap();
    assert!(base.to_string_lossy().contains("fsobs-test-"));
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let jobs = fs.dir.join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    std::fs::set_permissions(&jobs, std::fs::Permissions::from_mode(0o777)).unwrap();
    (fs, jobs)
}

#[derive(Clone, Copy, Debug)]
enum Failure {
    /// The lock directory changes owner: the holder's utimes (explicit times) gets EPERM.
    Eperm,
    /// The holder's view of the filesystem (a bind mount) turns read-only: EROFS.
    Erofs,
    /// The filesystem is full and its metadata updates fail: ENOSPC.
    Enospc,
}

/// Where the holder and the contender lock, and how the holder's refreshes are made to fail.
struct Scene {
    /// The file the holder locks (its lock is `FILE.lock`), and the contender's path to it.
    held_file: PathBuf,
    real_file: PathBuf,
    fail: Box<dyn FnOnce()>,
    _guards: Vec<Box<dyn std::any::Any>>,
}

fn scene(failure: Failure) -> Scene {
    match failure {
        Failure::Eperm => {
            let (fs, jobs) = jobs_fs();
            let real_lock = jobs.join("job.lock");
            Scene {
                held_file: jobs.join("job"),
                real_file: jobs.join("job"),
                fail: Box::new(move || {
                    std::os::unix::fs::chown(&real_lock, Some(0), Some(0)).unwrap()
                }),
                _guards: vec![Box::new(fs)],
            }
        }
        Failure::Erofs => {
            let (fs, jobs) = jobs_fs();
            let view = std::rc::Rc::new(Mount::bind(&fs.dir));
            let v = view.clone();
            Scene {
                held_file: view.dir.join("jobs/job"),
                real_file: jobs.join("job"),
                fail: Box::new(move || v.remount_readonly()),
                _guards: vec![Box::new(view), Box::new(fs)],
            }
        }
        Failure::Enospc => {
            let fs = std::rc::Rc::new(FullFs::mount());
            let f = fs.clone();
            Scene {
                held_file: fs.dir.join("jobs/job"),
                real_file: fs.dir.join("jobs/job"),
                fail: Box::new(move || f.fill()),
                _guards: vec![Box::new(fs)],
            }
        }
    }
}

/// One case: hold for `held` (0: fail before the first refresh), make the refresh fail, let a
/// contender take the lock once it looks stale; the observer must flag the holder first, answer
/// 3 while it lives, and report the steal naming both.
fn steal_after(failure: Failure, held: Duration) {
    let errno = match failure {
        Failure::Eperm => "EPERM",
        Failure::Erofs => "EROFS",
        Failure::Enospc => "ENOSPC",
    };
    let Scene {
        held_file,
        real_file: real,
        fail,
        _guards,
    } = scene(failure);
    let held_lock = PathBuf::from(format!("{}.lock", held_file.display()));
    // The lock's filesystem only: a storm of failures elsewhere on the node (another test
    // binary beside this one) must not delay the flag this test times against the steal.
    let mut obs = Observer::start(&[
        "--watch-mount",
        held_file.parent().unwrap().to_str().unwrap(),
    ]);
    let holder = start_holder(&held_file);
    // Known from its acquisition (mkdir of a lock name), with no glob configured.
    let v = wait_lock(
        &obs,
        &held_lock,
        "known, held by the holder",
        Duration::from_secs(10),
        |v| v["known"] == true && v["lock"]["holder"]["pid"] == holder.pid(),
    );
    assert_eq!(v["lock"]["acquired_by"], "mkdir", "{v}");
    assert_eq!(v["lock"]["known_by"], "convention", "{v}");
    std::thread::sleep(held);
    if held >= Duration::from_secs(1) {
        let v = lock(&obs, &held_lock);
        assert_eq!(v["state"], "healthy", "{v}");
        assert!(v["lock"]["last_ok_unix_ns"].as_u64().is_some(), "{v}");
    }
    let mut contender = Command::new("node")
        .arg(script("contender.js"))
        .arg(&real)
        .env("NODE_PATH", node_modules())
        .stdout(Stdio::piped())
        .spawn()
        .expect("contender");
    let mut said = BufReader::new(contender.stdout.take().unwrap());
    let mut ready = String::new();
    said.read_line(&mut ready).unwrap();
    assert!(
        ready.starts_with("ready"),
        "the contender did not start: {ready:?}"
    );
    fail();
    let failed_at = now_ms();
    let (mut flagged, mut status_3) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while contender.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _: Result<_, _> = contender.kill();
            panic!("the contender never took the lock");
        }
        if flagged.is_none() && lock(&obs, &held_lock)["state"] == "heartbeat-failing" {
            flagged = Some(now_ms());
        }
        if status_3.is_none() && lock_status(&obs, &held_lock) == 3 {
            status_3 = Some(now_ms());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut text = String::new();
    said.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("pid="), "the contender failed: {text}");
    let (contender_pid, acquired_ms) = (field(&text, "pid"), field(&text, "acquired_unix_ms"));
    let flagged = flagged.expect("/locks never showed heartbeat-failing before the steal");
    let status_3 = status_3.expect("lock-status never answered 3 before the steal");
    assert!(flagged < acquired_ms && status_3 < acquired_ms);
    eprintln!(
        "{failure:?} after {held:?}: failing {} ms after the failure began, {} ms before the contender took the lock",
        flagged.saturating_sub(failed_at),
        acquired_ms - flagged
    );
    // The steal, named, with the kernel's times: flagged first.
    let stolen = obs.wait_for("lock-stolen", |v| {
        v["type"] == "lock"
            && v["event"] == "lock-stolen"
            && v["lock"]["holder"]["pid"] == holder.pid()
    });
    let l = &stolen["lock"];
    assert_eq!(stolen["severity"], "critical");
    assert_eq!(l["removed_by"]["pid"], contender_pid, "{stolen}");
    assert_eq!(l["first_failure"]["errno_name"], errno, "{stolen}");
    let failing = l["failing_since_unix_ns"].as_u64().expect("failing_since");
    assert!(
        failing < stolen["time_unix_ns"].as_u64().unwrap(),
        "{stolen}"
    );
    // The contender's own mkdir after the steal makes it the new holder.
    let taken = obs.wait_for("acquired by the contender", |v| {
        v["type"] == "lock"
            && v["event"] == "acquired"
            && v["lock"]["holder"]["pid"] == contender_pid
    });
    assert_eq!(taken["lock"]["acquired_by"], "mkdir", "{taken}");
    drop(holder);
}

#[test]
#[cfg_attr(fsobs_vm, ignore = "host only: needs node and the npm lock library")]
fn proper_lockfile_eperm_before_any_refresh_is_flagged_from_the_acquisition() {
    steal_after(Failure::Eperm, Duration::ZERO);
}

#[test]
#[cfg_attr(fsobs_vm, ignore = "host only: needs node and the npm lock library")]
fn proper_lockfile_eperm_after_one_refresh_is_flagged_before_the_steal() {
    steal_after(Failure::Eperm, Duration::from_millis(1500));
}

#[test]
#[cfg_attr(fsobs_vm, ignore = "host only: needs node and the npm lock library")]
fn proper_lockfile_eperm_after_ten_refreshes_is_flagged_before_the_steal() {
    steal_after(Failure::Eperm, Duration::from_millis(10_500));
}

#[test]
#[cfg_attr(fsobs_vm, ignore = "host only: needs node and the npm lock library")]
fn proper_lockfile_erofs_before_any_refresh_is_flagged_from_the_acquisition() {
    steal_after(Failure::Erofs, Duration::ZERO);
}

#[test]
#[cfg_attr(fsobs_vm, ignore = "host only: needs node and the npm lock library")]
fn proper_lockfile_erofs_after_one_refresh_is_flagged_before_the_steal() {
    steal_after(Failure::Erofs, Duration::from_millis(1500));
}

#[test]
#[cfg_attr(fsobs_vm, ignore = "host only: needs node and the npm lock library")]
fn proper_lockfile_erofs_after_ten_refreshes_is_flagged_before_the_steal() {
    steal_after(Failure::Erofs, Duration::from_millis(10_500));
}

#[test]
#[cfg_attr(fsobs_vm, ignore = "host only: needs node and the npm lock library")]
fn proper_lockfile_enospc_before_any_refresh_is_flagged_from_the_acquisition() {
    steal_after(Failure::Enospc, Duration::ZERO);
}

#[test]
#[cfg_attr(fsobs_vm, ignore = "host only: needs node and the npm lock library")]
fn proper_lockfile_enospc_after_one_refresh_is_flagged_before_the_steal() {
    steal_after(Failure::Enospc, Duration::from_millis(1500));
}

#[test]
#[cfg_attr(fsobs_vm, ignore = "host only: needs node and the npm lock library")]
fn proper_lockfile_enospc_after_ten_refreshes_is_flagged_before_the_steal() {
    steal_after(Failure::Enospc, Duration::from_millis(10_500));
}

#[test]
#[cfg_attr(fsobs_vm, ignore = "host only: needs node and the npm lock library")]
fn another_processs_failed_touch_changes_neither_holder_nor_state() {
    let (_fs, jobs) = jobs_fs();
    let file = jobs.join("job");
    let lock_dir = jobs.join("job.lock");
    let obs = Observer::shared(&[]);
    let holder = start_holder(&file);
    std::thread::sleep(Duration::from_millis(1500));
    // Another user touches the held lock: utimes with "now" needs write access, it has none.
    let out = integration_tests::output_within(
        Command::new("setpriv")
            .args(["--reuid=1234", "--regid=1234", "--clear-groups", "touch"])
            .arg(&lock_dir),
        CHILD_TIMEOUT,
    );
    assert!(!out.status.success(), "the touch was meant to fail");
    // Its exit is long past the holder checks (every 250 ms).
    std::thread::sleep(Duration::from_millis(1000));
    let v = lock(&obs, &lock_dir);
    assert_eq!(v["state"], "healthy", "{v}");
    assert_eq!(v["lock"]["holder"]["pid"], holder.pid(), "{v}");
    let contenders = v["lock"]["contenders"].as_array().unwrap();
    assert!(
        contenders
            .iter()
            .any(|c| c["comm"] == "touch" && c["last_errno"] != 0),
        "the failed touch is recorded as a contender: {v}"
    );
    assert_eq!(lock_status(&obs, &lock_dir), 0);
}

#[test]
#[cfg_attr(fsobs_vm, ignore = "host only: needs node and the npm lock library")]
fn two_hundred_short_lived_locks_do_not_crowd_out_a_real_one() {
    let (fs, jobs) = jobs_fs();
    // A table of 100 locks: one process makes 200 lock-named directories and exits. Only this
    // filesystem's: a live lock of another test elsewhere on the node would hold a slot.
    let obs = Observer::start(&[
        "--set",
        "locks.max_locks=100",
        "--watch-mount",
        fs.dir.to_str().unwrap(),
    ]);
    let status = Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && mkdir $(seq -f 'short%g.lock' 1 200)")
        .arg("sh")
        .arg(&jobs)
        .status()
        .unwrap();
    assert!(status.success());
    // The table fills with them and each is found holder-dead (which ones are kept depends on
    // when the liveness check runs between the events: a finished lock makes room first).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http_get(obs.addr(), "/locks");
        let all: Value = serde_json::from_str(&body).unwrap();
        let locks = all["locks"].as_array().unwrap();
        if locks.len() == 100 && locks.iter().all(|l| l["state"] == "holder-dead") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the short locks did not fill the table, holder-dead: {} locks",
            locks.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let file = jobs.join("real");
    let holder = start_holder(&file);
    let real_lock = jobs.join("real.lock");
    let v = wait_lock(
        &obs,
        &real_lock,
        "the real lock tracked",
        Duration::from_secs(10),
        |v| v["known"] == true,
    );
    assert_eq!(v["lock"]["holder"]["pid"], holder.pid(), "{v}");
    assert_eq!(v["state"], "healthy", "{v}");
    let (_, body) = http_get(obs.addr(), "/locks");
    let all: Value = serde_json::from_str(&body).unwrap();
    assert!(all["locks"].as_array().unwrap().len() <= 100);
}
