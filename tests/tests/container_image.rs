//! The container tier: the observer runs from its image (built offline by `cargo xtask image`)
//! with exactly what a DaemonSet manifest asks — user, capabilities, read-only root, seccomp,
//! the node's pid namespace, env, mounts and the shipped ConfigMap, all read from the manifests
//! by `deploy/check.py container` — and workloads run in other containers.
//!
//! Two things a test runtime forces, said where they happen: the pod's network is the host's
//! loopback (the doors move to `127.0.0.1:0` through the observer's own env overrides), and the
//! node's mount namespace is read through this test's process (`system.node_pid`), because pid 1
//! of these machines cannot be inspected even by root; in a cluster it is the node's init.

use std::time::{Duration, Instant};

use integration_tests::{
    Mount, Value,
    container::{Podman, announced, daemonset, observer_run, observer_run_args},
    daemon::errors_series,
    http_get, http_post,
    locks::Holder,
    metric_value,
    purge::{DAY, age, tree, verdict},
    workload_cmd,
};

/// The doors on loopback and the node's mount namespace through this process.
fn test_env() -> Vec<(&'static str, String)> {
    vec![
        ("OBSERVER__HTTP__METRICS_LISTEN", "127.0.0.1:0".into()),
        ("OBSERVER__HTTP__LISTEN", "127.0.0.1:0".into()),
        ("OBSERVER__SYSTEM__NODE_PID", std::process::id().to_string()),
    ]
}

/// Waits until the containerised observer `name` announced both doors: (api, metrics).
fn wait_ready(podman: &Podman, name: &str) -> (String, String) {
    let deadline = Instant::now() + integration_tests::START_TIMEOUT;
    loop {
        let logs = podman.logs(name);
        if let (Some(api), Some(metrics)) = (announced(&logs, "api"), announced(&logs, "metrics"))
            && logs.contains("fsobserver: probe mode")
        {
            return (api, metrics);
        }
        let state = podman.inspect(name, "{{.State.Status}}");
        assert!(
            state == "running" && Instant::now() < deadline,
            "the observer container did not start ({state}):\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `GET addr path` until `until` holds for the body; fails with the last body after 20 s.
fn wait_http(addr: &str, path: &str, what: &str, until: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + integration_tests::EVENT_TIMEOUT;
    loop {
        let (code, body) = http_get(addr, path);
        if code == 200 && until(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never showed in {path}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: real containers need podman and runc, which the guests do not have"
)]
fn the_image_is_what_the_dockerfile_describes() {
    let podman = Podman::isolated();
    let image = podman.load_observer_image();
    let df = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/Dockerfile"),
    )
    .unwrap();
    let stage = df.rsplit_once("\nFROM ").unwrap().1;
    let line = |k: &str| {
        stage
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("the Dockerfile's last stage has no {k}"))
            .trim()
            .to_string()
    };
    let json = |s: &str| serde_json::from_str::<Value>(s).unwrap();
    assert_eq!(podman.inspect(&image, "{{.Config.User}}"), line("USER "));
    assert_eq!(
        json(&podman.inspect(&image, "{{json .Config.Entrypoint}}")),
        json(&line("ENTRYPOINT "))
    );
    assert_eq!(
        json(&podman.inspect(&image, "{{json .Config.Cmd}}")),
        json(&line("CMD "))
    );
    // The entrypoint is the observer, and it runs from the image's root alone.
    let out = podman.run_to_end(&[
        "--network".into(),
        "none".into(),
        "--ulimit".into(),
        "nofile=1024:1024".into(),
        "--ulimit".into(),
        "nproc=1024:1024".into(),
        image,
        "config".into(),
        "check".into(),
        "/dev/null".into(),
    ]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: real containers need podman and runc, which the guests do not have"
)]
fn the_least_privilege_daemonset_sees_a_containers_enospc_and_a_node_lock() {
    let spec = daemonset("least-privilege");
    // The workload runs in a pod's cgroup, as the kubelet's cgroupfs driver lays them out, and
    // the pod has its log directory where the DaemonSet mounts the node's /var/log/pods.
    let podman = Podman::isolated();
    let pod = podman.pod_cgroup();
    let image = podman.load_observer_image();
    let (args, mounts) = observer_run(&podman, &spec, &image, &test_env());
    let pods_dir = &mounts
        .iter()
        .find(|(inside, _)| inside.ends_with("/var/log/pods"))
        .expect("the DaemonSet mounts /var/log/pods")
        .1;
    let pods_dir_here = std::path::Path::new("/var/log/pods");
    assert!(
        !pods_dir.starts_with(pods_dir_here) || !pods_dir_here.exists(),
        "this test lays out a pod directory: it needs /var/log/pods not to exist here"
    );
    std::fs::create_dir(pods_dir.join(format!("ci_runner-7_{}", pod.pod_uid))).unwrap();
    // A directory under the node's /var/lib: a lock there, and a purge policy rooted there
    // (the test's one addition to the shipped configuration, written as node paths).
    let dir = tempfile::Builder::new()
        .prefix("fsobs-test-")
        .tempdir_in("/var/lib")
        .unwrap();
    tree(&dir.path().join("jobs/old"), 3);
    age(&dir.path().join("jobs/old"), 5 * DAY);
    let mut args = args;
    args.extend([
        // Capacity of a node path the DaemonSet mounts (sampled under /host, named as the node's).
        "--set".into(),
        "capacity.mounts=[\"/var/lib\"]".into(),
        "--set".into(),
        "purge.enabled=true".into(),
        "--set".into(),
        format!(
            "purge.policies=[{{name = \"p\", root = \"{}\", match = [\"jobs/*\"], min_age_secs = 3600}}]",
            dir.path().display()
        ),
    ]);
    podman.run_detached("fsobs-observer", &args);
    let (api, metrics) = wait_ready(&podman, "fsobs-observer");

    // A workload container fills its volume (a tmpfs on the node) until ENOSPC.
    let vol = Mount::tmpfs("size=256k");
    let id = podman.filled("fsobs-fill", Some(&pod), &vol.dir);
    // Counted under the node's mount point and the pod's name.
    let by_mount = errors_series("write", "ENOSPC", &vol.dir);
    let by_workload = "fsobserver_workload_errors_total{workload=\"ci/runner-7\",errno=\"ENOSPC\"}";
    wait_http(&metrics, "/metrics", "the container's ENOSPC", |m| {
        metric_value(m, &by_mount).is_some_and(|v| v >= 1.0)
            && metric_value(m, by_workload).is_some_and(|v| v >= 1.0)
            && metric_value(m, "fsobserver_mount_size_bytes{mount=\"/var/lib\"}")
                .is_some_and(|v| v > 0.0)
    });

    // The event, from the flight recorder: both views, the container and its pod.
    let (code, dump) = http_get(&api, "/dump");
    assert_eq!(code, 200, "{dump}");
    // Another test's container may fill its own /data/big meanwhile: this volume's.
    let node_path = vol.dir.join("big").display().to_string();
    let ev = dump
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| {
            v["errno_name"] == "ENOSPC"
                && v["path"] == "/data/big"
                && v["host_path"] == node_path.as_str()
        })
        .unwrap_or_else(|| panic!("no ENOSPC event for {node_path} in the dump:\n{dump}"));
    assert_eq!(ev["container_id"], id.as_str(), "{ev}");
    assert_eq!(
        (&ev["pod_namespace"], &ev["pod_name"]),
        (&"ci".into(), &"runner-7".into()),
        "{ev}"
    );

    // The shipped ConfigMap's lock glob (`/var/lib/**/*.lock`, a node path) tracks a lock a
    // node process refreshes under /var/lib.
    let lock = dir.path().join("x.lock");
    std::fs::write(&lock, b"").unwrap();
    let holder = Holder(
        workload_cmd(&["heartbeat", lock.to_str().unwrap(), "100", "now"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let body = wait_http(
        &api,
        &format!("/locks?path={}", lock.display()),
        "a healthy lock",
        |b| b.contains("\"state\":\"healthy\""),
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["lock"]["holder"]["pid"], u64::from(holder.0.id()), "{v}");
    assert_eq!(v["lock"]["known_by"], "glob", "{v}");

    // The policy, rooted at a node path, sees its entry through system.node_root (a dry run).
    let (status, body) = http_post(&api, "/purge?policy=p&execute=false");
    assert_eq!(status, 200, "{body}");
    let run = &serde_json::from_str::<Value>(&body).unwrap()["runs"][0];
    assert_eq!(verdict(run, "jobs/old").0, "would-delete", "{run:#}");
    assert!(dir.path().join("jobs/old").exists(), "a dry run deleted");
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: real containers need podman and runc, which the guests do not have"
)]
fn a_missing_capability_a_seccomp_filter_or_an_unmounted_node_path_stops_it_with_one_line() {
    let podman = Podman::isolated();
    let image = podman.load_observer_image();
    let run = |spec: &Value| -> String {
        let out = podman.run_to_end(&observer_run_args(&podman, spec, &image, &test_env()));
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "it started:\n{text}");
        text
    };
    // The least-privilege settings without CAP_BPF.
    let mut spec = daemonset("least-privilege");
    spec["cap_add"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c != "BPF");
    let text = run(&spec);
    assert!(text.contains("missing CAP_BPF"), "{text}");
    // With every capability, under the runtime's default seccomp profile (podman's, like
    // containerd's, allows bpf() only with CAP_SYS_ADMIN): refused, and said so.
    let mut spec = daemonset("least-privilege");
    spec["seccomp"] = "RuntimeDefault".into();
    let text = run(&spec);
    assert!(text.contains("seccomp filter that blocks it"), "{text}");
    // A node path the DaemonSet does not mount under /host: the node's root.
    let spec = daemonset("least-privilege");
    let mut args = observer_run_args(&podman, &spec, &image, &test_env());
    args.extend(["--set".into(), "capacity.mounts=[\"/\"]".into()]);
    let out = podman.run_to_end(&args);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "it started:\n{text}");
    assert!(
        text.contains("capacity.mounts: / is not mounted under system.node_root"),
        "{text}"
    );
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: real containers need podman and runc, which the guests do not have"
)]
fn the_privileged_daemonset_starts_from_the_image() {
    let spec = daemonset("privileged");
    let podman = Podman::isolated();
    let image = podman.load_observer_image();
    podman.run_detached(
        "fsobs-observer-privileged",
        &observer_run_args(&podman, &spec, &image, &test_env()),
    );
    let (_, metrics) = wait_ready(&podman, "fsobs-observer-privileged");
    let (code, body) = http_get(&metrics, "/healthz");
    assert_eq!(code, 200, "{body}");
}

/// A Prometheus server (Debian's package) on loopback, killed on drop.
struct Prometheus {
    child: std::process::Child,
    addr: String,
    _data: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` as the shipped ServiceMonitor does (job, path, interval) and loads the
    /// shipped alert rules. The evaluation interval is the scrape interval (the Operator's
    /// default is 30 s; the rules' `for:` windows are what is being tested).
    fn start(target: &str) -> Prometheus {
        let scrape = integration_tests::container::check_py(&["scrape"]);
        let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/alerts/fsobserver-rules.yml");
        let data = tempfile::Builder::new()
            .prefix("fsobs-prometheus-")
            .tempdir()
            .unwrap();
        let config = data.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {i}\n  evaluation_interval: {i}\n\
                 rule_files: [\"{}\"]\n\
                 scrape_configs:\n  - job_name: {}\n    metrics_path: {}\n    \
                 static_configs: [{{targets: [\"{target}\"]}}]\n",
                rules.display(),
                scrape["job"].as_str().unwrap(),
                scrape["path"].as_str().unwrap(),
                i = scrape["interval"].as_str().unwrap(),
            ),
        )
        .unwrap();
        // A free loopback port (Prometheus cannot report one it picked itself).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus (Debian's package, installed by cargo xtask test)");
        Prometheus {
            child,
            addr,
            _data: data,
        }
    }

    /// Firing alerts: (name, labels).
    fn firing(&self) -> Vec<(String, Value)> {
        let (code, body) = http_get(&self.addr, "/api/v1/alerts");
        if code != 200 {
            return Vec::new();
        }
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                    a["labels"].clone(),
                )
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _: Result<_, _> = self.child.kill();
        let _: Result<_, _> = self.child.wait();
    }
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: real containers need podman and runc, which the guests do not have"
)]
fn prometheus_fires_the_shipped_alerts_on_a_containers_enospc_storm() {
    let spec = daemonset("least-privilege");
    let podman = Podman::isolated();
    let image = podman.load_observer_image();
    podman.run_detached(
        "fsobs-observer",
        &observer_run_args(&podman, &spec, &image, &test_env()),
    );
    let (_, metrics) = wait_ready(&podman, "fsobs-observer");
    let prometheus = Prometheus::start(&metrics);

    // A storm: 20 failing writes a second on a full volume, from a workload container.
    let vol = Mount::tmpfs("size=256k");
    let id = podman.filled("fsobs-storm", None, &vol.dir);
    let mut storm = podman
        .cmd()
        .args([
            "exec",
            "fsobs-storm",
            "/fsobs-workload",
            "storm-rate",
            "/data/big",
            "20",
            "600",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mount = vol.dir.display().to_string();
    let (mut fs_full, mut per_workload) = (None, None);
    // FilesystemFullErrors waits 1 min, the per-workload alert 2 min, after the first rates.
    while fs_full.is_none() || per_workload.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "alerts firing after 5 min: {:?}",
            prometheus.firing()
        );
        for (name, labels) in prometheus.firing() {
            if name == "FilesystemFullErrors" && labels["mount"] == mount.as_str() {
                fs_full.get_or_insert((started.elapsed(), labels));
            } else if name == "WorkloadFilesystemFullErrors" && labels["workload"] == id[..12] {
                per_workload.get_or_insert((started.elapsed(), labels));
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let _: Result<_, _> = storm.kill();
    let _: Result<_, _> = storm.wait();
    let (t1, l1) = fs_full.unwrap();
    let (t2, l2) = per_workload.unwrap();
    eprintln!(
        "FilesystemFullErrors after {t1:?} {l1}; WorkloadFilesystemFullErrors after {t2:?} {l2}"
    );
    assert_eq!(l1["errno"], "ENOSPC");
    assert_eq!(l2["errno"], "ENOSPC");
}
