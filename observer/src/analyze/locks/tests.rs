use super::*;

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
    }
}

fn tracker() -> LockTracker {
    let mut g = globset::GlobSetBuilder::new();
    g.add(globset::Glob::new("/l/*.lock").unwrap());
    LockTracker::new(g.build().unwrap(), Some(1.0), 16, true)
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
fn a_steady_refresh_is_learned_an_irregular_one_is_not() {
    let mut t = tracker();
    let h = who(10);
    let mut learned = Vec::new();
    for i in 0..5 {
        learned.extend(t.heartbeat(&touch("/var/x.pid", i * S / 10, &h, 0)));
    }
    assert_eq!(learned[0].event, "learned");
    assert!(learned[0].lock.learned);
    let mut l = learn::Learner::new(8);
    let key = (1, "/y".to_string());
    let times = [0, S / 10, 2 * S, 2 * S + S / 100, 9 * S];
    assert!(!times.iter().any(|&ts| l.refresh(&key, 5, ts)));
}
