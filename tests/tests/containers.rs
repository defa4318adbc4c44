//! Node reality: workloads in real containers (podman + runc, own mount namespace and cgroup)
//! under an observer on the node. Their paths arrive as the container saw them; events carry
//! both views, the container id, and the node's mount; locks are told apart by the node's
//! file, not by the path string a container used.

use std::{path::Path, time::Duration};

use integration_tests::{
    Mount, Observer, container::Podman, daemon::errors_series, locks::wait_lock,
};

fn observer() -> std::sync::MutexGuard<'static, Observer> {
    Observer::shared(&[
        "--set",
        "locks.globs=[\"**/*.lock\"]",
        "--set",
        "locks.stale_timeout_secs=1.0",
    ])
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: real containers need podman and runc, which the guests do not have"
)]
fn a_container_filling_its_volume_is_named_with_both_views_and_the_nodes_mount() {
    let mut obs = observer();
    let vol = Mount::tmpfs("size=256k");
    let podman = Podman::isolated();
    let id = podman.filled("fsobs-fill", None, &vol.dir);
    let node_path = vol.dir.join("big").display().to_string();
    // Another test's container may fill its own /data/big meanwhile: this volume's.
    let ev = obs.wait_for("the container's ENOSPC write", |v| {
        v["errno_name"] == "ENOSPC"
            && v["path"] == "/data/big"
            && v["host_path"] == node_path.as_str()
    });
    assert_eq!(ev["container_id"], id.as_str(), "{ev}");
    assert_eq!(ev["comm"], "fsobs-workload");
    let own_ns = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    assert_ne!(
        format!("mnt:[{}]", ev["mnt_ns"]),
        own_ns.to_string_lossy(),
        "the event names the container's mount namespace"
    );
    // Counted under the node's mount point, and by the node's path prefix.
    obs.wait_metric(&errors_series("write", "ENOSPC", &vol.dir), |v| v >= 1.0);
    obs.wait_metric("fsobserver_foreign_paths_total{view=\"node\"}", |v| {
        v >= 1.0
    });
    let metrics = obs.metrics();
    assert!(
        !metrics.contains("path_prefix=\"/data"),
        "a container's view leaked into the node's path keys:\n{metrics}"
    );
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: real containers need podman and runc, which the guests do not have"
)]
fn locks_at_the_same_path_in_two_containers_are_two_locks() {
    let mut obs = observer();
    let (a, b) = (Mount::tmpfs("size=1m"), Mount::tmpfs("size=1m"));
    for m in [&a, &b] {
        std::fs::write(m.dir.join("x.lock"), b"").unwrap();
    }
    let podman = Podman::isolated();
    // Each container refreshes "its" /locks/x.lock every 100 ms: two different files.
    let ids: Vec<String> = [("fsobs-lock-a", &a), ("fsobs-lock-b", &b)]
        .into_iter()
        .map(|(name, m)| {
            podman.start(
                name,
                &[(&m.dir, "/locks")],
                &["heartbeat", "/locks/x.lock", "100", "now"],
            )
        })
        .collect();
    let (la, lb) = (a.dir.join("x.lock"), b.dir.join("x.lock"));
    let within = Duration::from_secs(20);
    let healthy = |v: &integration_tests::Value| v["state"] == "healthy";
    let va = wait_lock(&obs, &la, "never healthy", within, healthy);
    let vb = wait_lock(&obs, &lb, "never healthy", within, healthy);
    let holder = |v: &integration_tests::Value| v["lock"]["holder"]["pid"].clone();
    assert_ne!(holder(&va), holder(&vb), "{va}\n{vb}");
    // A contender in the first container steals its lock (mtime older than 0 ms: at once).
    let out = podman.exec("fsobs-lock-a", &["contend", "/locks/x.lock", "0"]);
    assert!(out.contains("errno=0"), "the steal failed: {out}");
    let node_a = la.display().to_string();
    let stolen = obs.wait_for("lock-stolen in the first container", |v| {
        v["type"] == "lock" && v["event"] == "lock-stolen" && v["lock"]["path"] == node_a.as_str()
    });
    // The stealer, a process already gone when it was identified, is placed in its container
    // by the cgroup the kernel saw it in.
    assert_eq!(
        stolen["lock"]["removed_by"]["workload"],
        &ids[0][..12],
        "{stolen}"
    );
    // The other container's lock at the same path inside it is untouched.
    std::thread::sleep(Duration::from_millis(500));
    let after = integration_tests::locks::lock(&obs, &lb);
    assert_eq!(after["state"], "healthy", "{after}");
    assert_eq!(holder(&after), holder(&vb), "the holder changed: {after}");
    assert!(!Path::new(&la).exists() && Path::new(&lb).exists());
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: real containers need podman and runc, which the guests do not have"
)]
fn one_directory_mounted_twice_in_a_container_is_one_lock() {
    let mut obs = observer();
    let dir = Mount::tmpfs("size=1m");
    std::fs::write(dir.dir.join("y.lock"), b"").unwrap();
    let podman = Podman::isolated();
    // The holder refreshes /one/y.lock; a contender steals /two/y.lock: the same file.
    podman.start(
        "fsobs-twice",
        &[(&dir.dir, "/one"), (&dir.dir, "/two")],
        &["heartbeat", "/one/y.lock", "100", "now"],
    );
    let node = dir.dir.join("y.lock");
    wait_lock(&obs, &node, "never healthy", Duration::from_secs(20), |v| {
        v["state"] == "healthy"
    });
    let out = podman.exec("fsobs-twice", &["contend", "/two/y.lock", "0"]);
    assert!(out.contains("errno=0"), "the steal failed: {out}");
    let node_s = node.display().to_string();
    let stolen = obs.wait_for("lock-stolen through the second mount", |v| {
        v["type"] == "lock" && v["event"] == "lock-stolen" && v["lock"]["path"] == node_s.as_str()
    });
    assert_eq!(stolen["lock"]["acquired_by"], "heartbeat", "{stolen}");
}
