//! The daemon's outputs on the real kernel: Prometheus counters and `/top` after a real ENOSPC
//! storm, `observer tail` filters (and `--standalone`), the leak detector, and configuration
//! errors. The flight recorder is in `recorder.rs`, bounds and accuracy in `bounds.rs`.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use integration_tests::daemon::*;
use integration_tests::{
    CHILD_TIMEOUT, Mount, Observer, START_TIMEOUT, Value, metric_value, observer_bin, observer_cmd,
    output_within, workload,
};

#[test]
fn metrics_and_top_count_an_enospc_storm_exactly() {
    let m = Mount::tmpfs("size=64k");
    let obs = Observer::start(&["--watch-mount", m.dir.to_str().unwrap()]);
    let (pid, total) = storm(&m.dir, "f", 700);
    let series = errors_series("write", "ENOSPC", &m.dir);
    obs.wait_metric(&series, |v| v == total as f64);
    // Nothing more arrives later: the count is exact, not a lower bound.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(metric_value(&obs.metrics(), &series), Some(total as f64));

    let top = obs.top();
    let procs = top["top"]["processes"].as_array().unwrap();
    let row = procs
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} not in /top: {top}"));
    assert_eq!(enospc_write(row), 700, "{row}");
    assert_eq!(row["comm"], "fsobs-workload");
    let prefix = format!("{}/*", m.dir.display());
    let path = top["top"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path_prefix"] == prefix.as_str())
        .unwrap_or_else(|| panic!("{prefix} not in /top: {top}"));
    assert_eq!(enospc_write(path), total);
    assert_eq!(path["bytes_failed"], total * 4096);
    let cap = &top["capacity"][0];
    assert_eq!(
        cap["mount"],
        m.dir.to_str().unwrap(),
        "watched mounts are sampled: {top}"
    );
    assert_eq!(cap["size_bytes"], 64 << 10, "{cap}");
}

#[test]
fn tail_shows_only_the_filtered_failures() {
    let (a, b, c) = (
        Mount::tmpfs("size=64k"),
        Mount::tmpfs("size=64k"),
        Mount::tmpfs("size=1m"),
    );
    let obs = Observer::shared(&[]);
    let glob = format!("{}/**", a.dir.display());
    let json = Tail::start(
        obs.addr(),
        &["--errno", "ENOSPC", "--path", &glob, "--json"],
    );
    let human = Tail::start(obs.addr(), &["--errno", "ENOSPC", "--path", &glob]);
    obs.wait_metric("fsobserver_stream_clients", |v| v == 2.0);

    // Counted from now: the shared observer may hold counts of earlier filesystems, since
    // unmounted, that had these device numbers.
    let metrics = obs.metrics();
    let before = |m: &Mount| {
        metric_value(&metrics, &errors_series("write", "ENOSPC", &m.dir)).unwrap_or(0.0)
    };
    let (before_a, before_b) = (before(&a), before(&b));
    let (pid_a, total_a) = storm(&a.dir, "f", 40);
    let (_, total_b) = storm(&b.dir, "f", 25); // another mount: filtered out
    let ok = workload(&["write-ok", c.dir.join("ok").to_str().unwrap(), "200"]);
    assert_eq!(ok.get("ok"), "200", "the concurrent writer succeeds");
    obs.wait_metric(&errors_series("write", "ENOSPC", &a.dir), |v| {
        v == before_a + total_a as f64
    });
    obs.wait_metric(&errors_series("write", "ENOSPC", &b.dir), |v| {
        v == before_b + total_b as f64
    });
    std::thread::sleep(Duration::from_millis(500)); // let the stream flush

    let lines = json.interrupt();
    assert_eq!(
        lines.len() as u64,
        total_a,
        "exactly the failures on {glob}: {lines:#?}"
    );
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
        assert_eq!(v["errno_name"], "ENOSPC");
        assert!(
            v["path"]
                .as_str()
                .unwrap()
                .starts_with(a.dir.to_str().unwrap()),
            "{v}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("\"pid\":{pid_a},")))
    );
    let cols = human.interrupt();
    assert!(cols[0].starts_with("TIME"), "header first: {cols:?}");
    assert_eq!(cols.len() as u64, total_a + 1, "{cols:#?}");
    assert!(
        cols[1..]
            .iter()
            .all(|l| l.contains("ENOSPC") && l.contains(a.dir.to_str().unwrap()))
    );
    assert!(
        !cols.iter().any(|l| l.contains("\x1b[")),
        "no colors when stdout is a pipe"
    );
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: userspace behaviour, the same on every kernel"
)]
fn standalone_tail_loads_its_own_probes() {
    let a = Mount::tmpfs("size=64k");
    let glob = format!("{}/**", a.dir.display());
    let mut tail = Tail::start(
        "unused",
        &[
            "--standalone",
            "--json",
            "--errno",
            "ENOSPC",
            "--path",
            &glob,
        ],
    );
    // Its own daemon announces its address and probe mode on stderr.
    let stderr = tail.0.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut addr = None;
    for l in lines.by_ref() {
        let l = l.unwrap();
        if let Some(x) = l.strip_prefix("fsobserver: api listening on ") {
            addr = Some(x.trim().to_string());
        }
        if l.starts_with("fsobserver: probe mode") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let addr = addr.expect("the standalone daemon's address");
    let (_, total) = storm(&a.dir, "f", 30);
    let series = errors_series("write", "ENOSPC", &a.dir);
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric_value(&integration_tests::http_get(&addr, "/metrics").1, &series)
        != Some(total as f64)
    {
        assert!(
            Instant::now() < deadline,
            "the standalone daemon never counted {total}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let ours = integration_tests::programs_held_by(tail.0.id());
    assert!(!ours.is_empty(), "the standalone tail holds no program");
    let got = tail.interrupt();
    assert_eq!(got.len() as u64, total, "{got:#?}");
    assert!(got.iter().all(|l| l.contains("\"errno_name\":\"ENOSPC\"")));
    // Ctrl-C of a standalone tail leaves no program behind (freed once its fds close).
    let deadline = Instant::now() + Duration::from_secs(10);
    while integration_tests::loaded_observer_programs()
        .iter()
        .any(|id| ours.contains(id))
    {
        assert!(
            Instant::now() < deadline,
            "programs still loaded after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn leak_detector_names_the_accumulating_directory_and_its_creator() {
    let m = Mount::tmpfs("size=64m");
    let obs = Observer::start(&[
        "--watch-mount",
        m.dir.to_str().unwrap(),
        "--create-sample",
        "1",
        "--delete-sample",
        "1",
        "--set",
        "leak.window_secs=30",
        "--set",
        "leak.min_net=200",
    ]);
    let wt = m.dir.join("worktrees/wt1");
    std::fs::create_dir_all(&wt).unwrap();
    let leaker = workload(&["create-excl", wt.to_str().unwrap(), "400"]);
    // Balanced churn elsewhere: every entry created there is removed again.
    let churn = m.dir.join("jobs");
    std::fs::create_dir(&churn).unwrap();
    workload(&["churn", churn.to_str().unwrap(), "400"]);
    std::fs::remove_dir_all(&churn).unwrap();
    let prefix = format!("{}/*", wt.display());
    let deadline = Instant::now() + Duration::from_secs(20);
    let leak = loop {
        let top = obs.top();
        let leaks = top["top"]["leaks"].as_array().unwrap().clone();
        match leaks.iter().find(|l| l["path_prefix"] == prefix.as_str()) {
            // Only the accumulating directory (the balanced churn's deletes may still be
            // on their way: wait for them).
            Some(l) if leaks.len() == 1 => break l.clone(),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "not exactly one leak, {prefix}: {top}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(leak["creates"], 400, "{leak}");
    assert_eq!(leak["deletes"], 0);
    assert_eq!(leak["creators"][0]["pid"], leaker.pid());
    assert_eq!(leak["creators"][0]["comm"], "fsobs-workload");
    let text = obs.metrics();
    assert_eq!(metric_value(&text, "fsobserver_leak_suspects"), Some(1.0));
    let series = format!("fsobserver_leak_net_entries{{path_prefix=\"{prefix}\"}}");
    assert_eq!(metric_value(&text, &series), Some(400.0), "{text}");
}

fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, text).unwrap();
    let o = observer_cmd(&["config", "check", file.to_str().unwrap()]);
    let run = output_within(
        Command::new(observer_bin()).args(["run", "--config", file.to_str().unwrap()]),
        START_TIMEOUT,
    );
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(
        o.status.code(),
        run.status.code(),
        "run and check agree: {err}"
    );
    (o.status.code().unwrap_or(-1), err)
}

#[test]
fn config_errors_exit_2_with_the_key_and_line() {
    let (code, err) = check("[aggregate]\npath_depth = 2\nno_such_key = 1\n");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no_such_key") && err.contains("line 3"),
        "{err}"
    );
    let (code, err) = check("[http]\nlisten = 9464\n");
    assert_eq!(code, 2);
    assert!(err.contains("listen") && err.contains("line 2"), "{err}");
    let src = tempfile::tempdir().unwrap();
    let ro = Mount::bind_readonly(src.path());
    let (code, err) = check(&format!(
        "[recorder]\ndump_dir = \"{}\"\n",
        ro.dir.display()
    ));
    assert_eq!(code, 2);
    assert!(
        err.contains("dump_dir") && err.contains("not writable"),
        "{err}"
    );
    let (code, out) = {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ok.toml");
        std::fs::write(&file, "[aggregate]\ntop_k = 5\n").unwrap();
        let o = observer_cmd(&["config", "check", file.to_str().unwrap()]);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string(),
        )
    };
    assert_eq!(code, Some(0));
    assert!(out.contains("config ok"));
    let o = output_within(
        Command::new(observer_bin())
            .args(["config", "check", "/dev/null"])
            .env("OBSERVER__AGGREGATE__TOP_K", "lots"),
        CHILD_TIMEOUT,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("aggregate.top_k"));
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: userspace behaviour, the same on every kernel"
)]
fn the_api_also_answers_on_a_0600_unix_socket() {
    use std::{
        io::{Read as _, Write as _},
        os::unix::fs::PermissionsExt as _,
    };
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fsobserver.sock");
    let obs = Observer::start(&["--set", &format!("http.unix_socket={}", sock.display())]);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    c.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 200") && answer.ends_with("ok\n"),
        "{answer:?}"
    );
    // A second observer configured with the same socket does not take it from the first.
    let second = output_within(
        Command::new(observer_bin()).args([
            "run",
            "--no-stdout",
            "--listen",
            "127.0.0.1:0",
            "--set",
            &format!("http.unix_socket={}", sock.display()),
        ]),
        START_TIMEOUT,
    );
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && err.contains("is served by another running observer"),
        "{:?}: {err}",
        second.status
    );
    assert!(
        std::os::unix::net::UnixStream::connect(&sock).is_ok(),
        "the first observer lost its socket"
    );
    obs.stop();
    assert!(!sock.exists(), "the socket is removed at exit");
    // An observer whose socket path was taken over by another one (after removing it) leaves
    // the other's socket alone at exit.
    let obs = Observer::start(&["--set", &format!("http.unix_socket={}", sock.display())]);
    std::fs::remove_file(&sock).unwrap();
    let other = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    obs.stop();
    assert!(
        std::os::unix::net::UnixStream::connect(&sock).is_ok(),
        "an exiting observer removed a socket that was not its own"
    );
    drop(other);
}

#[test]
#[cfg_attr(
    fsobs_vm,
    ignore = "host only: a pass over /proc in userspace, the same on every kernel"
)]
fn deleted_but_open_space_is_counted_by_filesystem_and_process() {
    let m = Mount::tmpfs("size=8m");
    let file = m.dir.join("held");
    std::fs::write(&file, vec![7u8; 2 << 20]).unwrap();
    let (child, line) = integration_tests::spawn_ready(&mut integration_tests::workload_cmd(&[
        "hold",
        file.to_str().unwrap(),
        "open",
        "120",
    ]));
    let holder = integration_tests::locks::Holder(child);
    assert!(line.contains("ready=1"), "{line}");
    // Deleted, still open: `du` no longer sees it, `df` still does.
    std::fs::remove_file(&file).unwrap();
    let obs = Observer::start(&["--set", "capacity.deleted_open_secs=1"]);
    let bytes = format!(
        "fsobserver_deleted_open_bytes{{mount=\"{}\"}}",
        m.dir.display()
    );
    let files = bytes.replace("_bytes{", "_files{");
    obs.wait_metric(&bytes, |v| v >= f64::from(2u32 << 20));
    assert_eq!(metric_value(&obs.metrics(), &files), Some(1.0));
    let top = obs.top();
    let row = top["deleted_open"]["by_process"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == holder.pid())
        .unwrap_or_else(|| panic!("the holder is not in /top: {top}"))
        .clone();
    assert_eq!(row["comm"], "fsobs-workload", "{row}");
    assert!(row["bytes"].as_u64().unwrap() >= 2 << 20, "{row}");
    // Closed: the next pass no longer counts it.
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_value(&obs.metrics(), &bytes).is_some() {
        assert!(Instant::now() < deadline, "still counted after the close");
        std::thread::sleep(Duration::from_millis(200));
    }
}
