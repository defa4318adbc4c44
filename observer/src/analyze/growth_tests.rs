//! Unit tests of the growth table.
use super::*;

fn key(ino: u64) -> DirKey {
    DirKey {
        dev: 7,
        _pad0: 0,
        ino,
    }
}

fn who(comm: &str) -> Actor {
    Actor {
        pid: 1,
        comm: comm.into(),
        workload: "host".into(),
    }
}

/// Many small growing worktrees roll up to their parent; a lockfile directory is its own
/// culprit; a directory that only churns is none.
#[test]
fn culprits_roll_up_to_where_entries_accumulate() {
    let mut g = Growth::new(60);
    let mut by_dir = HashMap::new();
    for i in 0..20u64 {
        g.name(
            key(100 + i),
            format!("/vol/wt/w{i}/src"),
            Some("/vol".into()),
            who("git"),
        );
        by_dir.insert(
            key(100 + i),
            EntryCounts {
                created: 30,
                mkdirs: 2,
                ..Default::default()
            },
        );
    }
    g.name(key(5), "/vol/locks".into(), Some("/vol".into()), who("job"));
    by_dir.insert(
        key(5),
        EntryCounts {
            created: 120,
            ..Default::default()
        },
    );
    g.name(key(6), "/vol/tmp".into(), Some("/vol".into()), who("make"));
    by_dir.insert(
        key(6),
        EntryCounts {
            created: 500,
            files: 500,
            ..Default::default()
        },
    );
    g.tick(&by_dir, &HashMap::new(), &HashMap::new(), 1_000_000_000);
    let c = g.culprits(0.05, 10, 2_000_000_000);
    let dirs: Vec<&str> = c.iter().map(|r| r.dir.as_str()).collect();
    assert_eq!(dirs, ["/vol/wt", "/vol/locks"], "{c:#?}");
    assert_eq!(c[0].net, 640);
    assert_eq!(c[0].created, 600);
    assert_eq!(c[0].mkdirs, 40);
    assert!(c[0].never_cleaned && c[1].never_cleaned);
    assert_eq!(c[0].creators[0].comm, "git");
    assert_eq!(c[1].first_creator.as_ref().unwrap().comm, "job");
}

#[test]
fn removals_are_dated_and_attributed() {
    let mut g = Growth::new(60);
    g.name(key(1), "/vol/a".into(), Some("/vol".into()), who("job"));
    let mut d = HashMap::from([(
        key(1),
        EntryCounts {
            created: 5,
            ..Default::default()
        },
    )]);
    let mut p = HashMap::from([(
        9,
        EntryCounts {
            created: 5,
            ..Default::default()
        },
    )]);
    let ids = HashMap::from([(9, who("cleaner"))]);
    g.tick(&d, &p, &ids, 1);
    assert!(g.dirs(10, 2)[0].never_cleaned);
    d.get_mut(&key(1)).unwrap().files = 2;
    p.get_mut(&9).unwrap().files = 2;
    g.tick(&d, &p, &ids, 5);
    let r = &g.dirs(10, 6)[0];
    assert_eq!((r.removed, r.net, r.never_cleaned), (2, 3, false));
    assert_eq!(r.last_removal_unix_ns, Some(5));
    assert_eq!(r.last_removed_by.as_ref().unwrap().comm, "cleaner");
    let (procs, wl) = g.actors(5);
    assert_eq!(procs[0].created, 5);
    assert_eq!(wl[0].workload, "host");
}
