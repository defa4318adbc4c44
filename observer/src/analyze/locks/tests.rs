use super::*;
use crate::events::identify::ProcIdentity;

const S: u64 = 1_000_000_000;

fn who(pid: u32) -> ProcIdentity {
    ProcIdentity {
        pid,
        start_time: 100 + u64::from(pid),
        comm: format!("p{pid}"),
        workload_label: "host".into(),
        ..Default::default()
    }
}

fn touch<'a>(path: &'a str, t: u64, w: &'a ProcIdentity, errno: u32) -> Touch<'a> {
    Touch {
        key: (7, path.to_string()),
        path,
        time_unix_ns: t,
        who: w,
        errno,
        syscall: "utimensat",
        exclusive: false,
    }
}

fn tracker_with(max_locks: usize, learn: bool) -> LockTracker {
    let mut g = globset::GlobSetBuilder::new();
    g.add(globset::Glob::new("/l/*.lock").unwrap());
    LockTracker::new(Rules {
        globs: g.build().unwrap(),
        conventions: Some(convention_set()),
        learn,
        stale_timeout_secs: Some(1.0),
        max_locks,
    })
}

fn tracker() -> LockTracker {
    tracker_with(16, true)
}

fn create<'a>(path: &'a str, t: u64, w: &'a ProcIdentity, syscall: &'static str) -> Touch<'a> {
    Touch {
        syscall,
        exclusive: true,
        ..touch(path, t, w, 0)
    }
}

#[test]
fn first_failed_refresh_flags_the_holder_then_a_steal_names_both() {
    let mut t = tracker();
    let (h, c) = (who(10), who(20));
    assert_eq!(
        t.heartbeat(&touch("/l/a.lock", S, &h, 0))[0].event,
        "acquired"
    );
    assert!(
        t.heartbeat(&touch("/l/a.lock", S + S / 10, &h, 0))
            .is_empty()
    );
    let ev = t.heartbeat(&touch("/l/a.lock", 2 * S, &h, 30));
    assert_eq!(ev[0].event, "heartbeat-failing");
    assert_eq!(ev[0].lock.state.exit_code(), 3);
    assert_eq!(
        ev[0].lock.last_failure.as_ref().unwrap().errno_name,
        "EROFS"
    );
    assert_eq!(ev[0].lock.looks_stale_at_unix_ns, Some(S + S / 10 + S));
    // A contender's touch is not the holder's heartbeat.
    assert!(t.heartbeat(&touch("/l/a.lock", 2 * S, &c, 0)).is_empty());
    let ev = t.removed(&touch("/l/a.lock", 3 * S, &c, 0), |_| true);
    assert_eq!(ev[0].event, "lock-stolen");
    assert_eq!(ev[0].severity, "critical");
    assert_eq!(ev[0].lock.holder.as_ref().unwrap().pid, 10);
    assert_eq!(ev[0].lock.removed_by.as_ref().unwrap().pid, 20);
    assert!(ev[0].lock.failing_since_unix_ns.unwrap() < ev[0].time_unix_ns);
    // The holder's refresh racing the removal fails with ENOENT: the cause stays EROFS.
    let ev = t.heartbeat(&touch("/l/a.lock", 3 * S + 1, &h, 2));
    assert_eq!(ev[0].event, "heartbeat-failing");
    assert_eq!(
        ev[0].lock.last_failure.as_ref().unwrap().errno_name,
        "ENOENT"
    );
    assert_eq!(
        ev[0].lock.first_failure.as_ref().unwrap().errno_name,
        "EROFS"
    );
    assert_eq!(ev[0].lock.failing_since_unix_ns, Some(2 * S));
    // The stealer re-creates and refreshes it, but the old holder is alive and still thinks it
    // holds the lock: it stays the holder (heartbeat-failing) until it exits.
    assert!(t.heartbeat(&touch("/l/a.lock", 4 * S, &c, 0)).is_empty());
    assert_eq!(
        t.check_holders(5 * S, |h| h.pid != 10)[0].event,
        "holder-dead"
    );
    let ev = t.heartbeat(&touch("/l/a.lock", 6 * S, &c, 0));
    assert_eq!(ev[0].event, "acquired");
    assert_eq!(ev[0].lock.holder.as_ref().unwrap().pid, 20);
}

#[test]
fn holder_death_release_and_untracked_paths() {
    let mut t = tracker();
    let h = who(10);
    t.heartbeat(&touch("/l/a.lock", S, &h, 0));
    let ev = t.check_holders(2 * S, |_| false);
    assert_eq!(ev[0].event, "holder-dead");
    assert_eq!(ev[0].lock.state.exit_code(), 4);
    assert!(
        t.check_holders(3 * S, |_| false).is_empty(),
        "reported once"
    );
    let ev = t.removed(&touch("/l/a.lock", 4 * S, &who(30), 0), |_| false);
    assert_eq!(
        ev[0].event, "released",
        "removing a dead holder's lock is not a steal"
    );
    assert!(t.heartbeat(&touch("/other/x", S, &h, 0)).is_empty());
    assert_eq!(t.locks().count(), 1);
}

#[test]
fn a_second_refresh_by_one_process_makes_a_lock_and_one_touch_does_not() {
    let mut t = tracker();
    let (h, other) = (who(10), who(11));
    // One refresh (tar, cp -a setting times): a candidate, not a lock; lock-status says why.
    assert!(t.heartbeat(&touch("/var/x.pid", S, &h, 0)).is_empty());
    let key = (7, "/var/x.pid".to_string());
    assert!(t.get(&key).is_none());
    let why = t.not_a_lock_reason(&key, "/var/x.pid").unwrap();
    assert!(why.contains("refreshed once by pid 10"), "{why}");
    // Another process's refresh starts over: evidence is per process.
    assert!(
        t.heartbeat(&touch("/var/x.pid", 2 * S, &other, 0))
            .is_empty()
    );
    assert!(t.heartbeat(&touch("/var/x.pid", 3 * S, &h, 0)).is_empty());
    // Two refreshes closer than 20 ms are one operation.
    assert!(
        t.heartbeat(&touch("/var/x.pid", 3 * S + 1000, &h, 0))
            .is_empty()
    );
    let ev = t.heartbeat(&touch("/var/x.pid", 4 * S, &h, 0));
    assert_eq!(ev[0].event, "learned");
    assert!(ev[0].lock.learned);
    assert_eq!(ev[0].lock.known_by, KnownBy::Convention);
    assert_eq!(ev[0].lock.confidence, "high");
    let l = t.get(&key).unwrap();
    assert_eq!(l.heartbeat_interval_secs, Some(1.0));
    // Any path, with locks.learn: medium confidence.
    t.heartbeat(&touch("/var/state", S, &h, 0));
    let ev = t.heartbeat(&touch("/var/state", 2 * S, &h, 0));
    assert_eq!(ev[0].lock.known_by, KnownBy::Learned);
    assert_eq!(ev[0].lock.confidence, "medium");
    // Without learning, only names are locks.
    let mut t = tracker_with(16, false);
    t.heartbeat(&touch("/var/state", S, &h, 0));
    assert!(t.heartbeat(&touch("/var/state", 2 * S, &h, 0)).is_empty());
    assert!(
        t.not_a_lock_reason(&(7, "/var/state".into()), "/var/state")
            .is_none()
    );
}

#[test]
fn a_failed_refresh_after_one_successful_one_is_a_failing_heartbeat() {
    let mut t = tracker();
    let (h, c) = (who(10), who(20));
    assert!(t.heartbeat(&touch("/ci/job.lock", S, &h, 0)).is_empty());
    // Another process failing to touch it proves nothing about a holder.
    assert!(
        t.heartbeat(&touch("/ci/job.lock", S + S / 2, &c, 13))
            .is_empty()
    );
    let ev = t.heartbeat(&touch("/ci/job.lock", 2 * S, &h, 28));
    let names: Vec<_> = ev.iter().map(|e| e.event).collect();
    assert_eq!(names, ["learned", "heartbeat-failing"]);
    let l = &ev[1].lock;
    assert_eq!(l.holder.as_ref().unwrap().pid, 10);
    assert_eq!(l.state.exit_code(), 3);
    assert_eq!(l.last_ok_unix_ns, Some(S));
    assert_eq!(l.first_failure.as_ref().unwrap().errno_name, "ENOSPC");
    // A failure with no success before it, by a process nobody saw refresh: nothing.
    assert!(t.heartbeat(&touch("/ci/other.lock", S, &h, 28)).is_empty());
    assert!(
        t.heartbeat(&touch("/l/a.lock", S, &h, 28)).is_empty(),
        "not even a glob"
    );
}

#[test]
fn an_acquisition_makes_the_holder_and_its_first_refresh_can_fail() {
    let mut t = tracker();
    let (h, c) = (who(10), who(20));
    let ev = t.created(&create("/ci/job.lock", S, &h, "mkdir"));
    assert_eq!(ev[0].event, "acquired");
    assert_eq!(ev[0].lock.acquired_by, "mkdir");
    assert_eq!(ev[0].lock.known_by, KnownBy::Convention);
    assert!(!ev[0].lock.learned);
    let ev = t.heartbeat(&touch("/ci/job.lock", S + S / 2, &h, 1));
    assert_eq!(ev[0].event, "heartbeat-failing");
    assert_eq!(ev[0].lock.holder.as_ref().unwrap().pid, 10);
    // A held lock is not taken by a create that would succeed on an existing file (a sampled
    // O_TRUNC open); an exclusive create proves the old lock gone (e.g. its filesystem was
    // unmounted unseen) and replaces it. A non-lock name is never acquired.
    let trunc = Touch {
        exclusive: false,
        ..create("/ci/job.lock", 2 * S, &c, "openat")
    };
    assert!(t.created(&trunc).is_empty());
    let ev = t.created(&create("/ci/job.lock", 2 * S, &c, "mkdir"));
    assert_eq!(ev[0].lock.holder.as_ref().unwrap().pid, 20);
    assert!(
        t.created(&create("/ci/job.txt", 2 * S, &c, "openat"))
            .is_empty()
    );
    let ev = t.created(&create("/l/x.lock", 2 * S, &c, "openat"));
    assert_eq!(ev[0].lock.acquired_by, "create-excl");
    assert_eq!(ev[0].lock.known_by, KnownBy::Glob);
}

#[test]
fn another_process_touching_a_held_lock_changes_nothing_but_its_contenders() {
    let mut t = tracker();
    let (h, c) = (who(10), who(20));
    t.created(&create("/ci/job.lock", S, &h, "mkdir"));
    for (i, errno) in [13, 2, 0, 13].into_iter().enumerate() {
        let at = S + (i as u64 + 1) * S / 10;
        assert!(
            t.heartbeat(&touch("/ci/job.lock", at, &c, errno))
                .is_empty()
        );
    }
    let key = (7, "/ci/job.lock".to_string());
    let l = t.get(&key).unwrap();
    assert_eq!(l.state, LockState::Healthy);
    assert_eq!(l.holder.as_ref().unwrap().pid, 10);
    assert_eq!(l.contenders.len(), 1);
    assert_eq!((l.contenders[0].pid, l.contenders[0].touches), (20, 4));
    assert_eq!(l.contenders[0].last_errno, 13);
    // The contender exits: the holder lives, so the lock is not holder-dead.
    assert!(t.check_holders(2 * S, |x| x.pid == 10).is_empty());
    assert_eq!(t.get(&key).unwrap().state.exit_code(), 0);
}

#[test]
fn finished_locks_make_room_for_new_ones() {
    let mut t = tracker_with(16, true);
    let tar = who(50);
    for i in 0..200 {
        let p = format!("/src/crate{i}/Cargo.lock");
        assert_eq!(t.created(&create(&p, S + i, &tar, "openat")).len(), 1);
        if i == 15 {
            // The table is full of held locks: the 17th is not tracked while tar lives.
            assert!(
                t.created(&create("/full.lock", S, &tar, "openat"))
                    .is_empty()
            );
        }
        if i >= 15 {
            t.check_holders(S + i, |_| false);
        }
    }
    // tar exited: every one of its "locks" is holder-dead; a real lock still gets tracked.
    let h = who(10);
    let ev = t.created(&create("/ci/real.lock", 3 * S, &h, "mkdir"));
    assert_eq!(ev[0].event, "acquired");
    assert_eq!(t.locks().count(), 16);
    assert_eq!(t.held(), 1);
}
