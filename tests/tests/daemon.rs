//! The daemon's outputs on the real kernel: Prometheus counters and `/top` after a real ENOSPC
//! storm, `observer tail` filters, the flight recorder (burst dumps, `observer dump`, `observer
//! replay`), surviving its own ENOSPC, bounded series and memory under path churn,
//! time-to-full accuracy, and configuration errors.

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    Mount, Observer, Value, in_vm, metric_value, observer_bin, observer_cmd, workload,
};

fn errors_series(syscall: &str, errno: &str, mount: &Path) -> String {
    format!(
        "fsobserver_syscall_errors_total{{syscall=\"{syscall}\",errno=\"{errno}\",mount=\"{}\"}}",
        mount.display()
    )
}

/// Fills `dir/name` until ENOSPC, then makes `n` more failing writes: returns (pid of the
/// second workload, total failed writes).
fn storm(dir: &Path, name: &str, n: u64) -> (u64, u64) {
    let f = dir.join(name);
    let f = f.to_str().unwrap();
    workload(&["fill", f]);
    let w = workload(&["fail-writes", f, &n.to_string()]);
    assert_eq!(
        w.get("failed"),
        n.to_string(),
        "every write fails on the full fs"
    );
    (w.pid(), n + 1)
}

fn enospc_write(row: &Value) -> u64 {
    row["errors"]["ENOSPC"]["write"].as_u64().unwrap_or(0)
}

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

/// A running `observer tail` whose stdout is collected.
struct Tail(std::process::Child);

impl Tail {
    fn start(addr: &str, extra: &[&str]) -> Tail {
        let child = Command::new(observer_bin())
            .args(["tail", "--addr", addr])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tail");
        Tail(child)
    }

    /// Ctrl-C; asserts exit status 0 and returns stdout lines.
    fn interrupt(mut self) -> Vec<String> {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::SIGINT).expect("SIGINT");
        let out = std::mem::replace(&mut self.0, Command::new("true").spawn().unwrap());
        let out = out.wait_with_output().expect("tail output");
        assert!(
            out.status.success(),
            "tail exited with {} after Ctrl-C; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .lines()
            .map(String::from)
            .collect()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tail_shows_only_the_filtered_failures() {
    let (a, b, c) = (
        Mount::tmpfs("size=64k"),
        Mount::tmpfs("size=64k"),
        Mount::tmpfs("size=1m"),
    );
    let obs = Observer::start(&[]);
    let glob = format!("{}/**", a.dir.display());
    let json = Tail::start(
        obs.addr(),
        &["--errno", "ENOSPC", "--path", &glob, "--json"],
    );
    let human = Tail::start(obs.addr(), &["--errno", "ENOSPC", "--path", &glob]);
    obs.wait_metric("fsobserver_stream_clients", |v| v == 2.0);

    let (pid_a, total_a) = storm(&a.dir, "f", 40);
    let (_, total_b) = storm(&b.dir, "f", 25); // another mount: filtered out
    let ok = workload(&["write-ok", c.dir.join("ok").to_str().unwrap(), "200"]);
    assert_eq!(ok.get("ok"), "200", "the concurrent writer succeeds");
    obs.wait_metric(&errors_series("write", "ENOSPC", &a.dir), |v| {
        v == total_a as f64
    });
    obs.wait_metric(&errors_series("write", "ENOSPC", &b.dir), |v| {
        v == total_b as f64
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
        if let Some(x) = l.strip_prefix("fsobserver: http listening on ") {
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
    let got = tail.interrupt();
    assert_eq!(got.len() as u64, total, "{got:#?}");
    assert!(got.iter().all(|l| l.contains("\"errno_name\":\"ENOSPC\"")));
    // Ctrl-C of a standalone tail leaves no program behind (freed once its fds close).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !integration_tests::loaded_observer_programs().is_empty() {
        assert!(
            Instant::now() < deadline,
            "programs still loaded after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read_dump(path: &Path) -> (Value, Vec<Value>) {
    let text = std::fs::read_to_string(path).expect("dump");
    let mut lines = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"));
    let header = lines.next().expect("header");
    assert_eq!(header["type"], "dump-header", "{header}");
    (header, lines.collect())
}

fn enospc_events(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "syscall" && v["errno"] == 28)
        .collect()
}

fn wait_for_file(dir: &Path) -> std::path::PathBuf {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "jsonl"));
        if let Some(p) = found {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "no dump appeared in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn burst_dump_holds_the_window_before_the_trigger_and_replays() {
    let a = Mount::tmpfs("size=64k");
    let dumps = Mount::tmpfs("size=8m");
    let dump_dir = format!("recorder.dump_dir={}", dumps.dir.display());
    let obs = Observer::start(&[
        "--watch-mount",
        a.dir.to_str().unwrap(),
        "--set",
        &dump_dir,
        "--set",
        "recorder.burst_errors=50",
    ]);
    // A trickle first (below the burst threshold), then the burst in a later second.
    let (early_pid, early) = storm(&a.dir, "f", 20);
    std::thread::sleep(Duration::from_millis(1100));
    let late = workload(&["fail-writes", a.dir.join("f").to_str().unwrap(), "300"]);
    let total = early + 300;

    let burst = wait_for_file(&dumps.dir);
    let (header, lines) = read_dump(&burst);
    assert_eq!(header["reason"], "burst");
    assert_eq!(header["trigger"]["errno"], "ENOSPC", "{header}");
    assert!(header["losses"]["kernel_ring_drops"].is_u64(), "{header}");
    assert!(
        header["losses"]["userspace_queue_drops"].is_u64(),
        "{header}"
    );
    let trigger_ns = header["trigger"]["time_unix_ns"].as_u64().unwrap();
    let before: Vec<_> = enospc_events(&lines)
        .into_iter()
        .filter(|v| v["time_unix_ns"].as_u64().unwrap() <= trigger_ns)
        .collect();
    assert_eq!(
        before.iter().filter(|v| v["pid"] == early_pid).count() as u64,
        20,
        "the pre-trigger trickle is in the burst dump"
    );
    assert!(before.iter().filter(|v| v["pid"] == late.pid()).count() >= 50);

    obs.wait_metric(&errors_series("write", "ENOSPC", &a.dir), |v| {
        v == total as f64
    });
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("dump.jsonl");
    let o = observer_cmd(&[
        "dump",
        "--addr",
        obs.addr(),
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (header, lines) = read_dump(&file);
    assert_eq!(header["reason"], "request");
    assert_eq!(header["probe_mode"], integration_tests::expected_mode());
    assert_eq!(
        enospc_events(&lines).len() as u64,
        total,
        "every failure is in the window"
    );
    assert!(
        lines.iter().any(|v| v["type"] == "snapshot"),
        "per-second snapshots"
    );

    let r = observer_cmd(&["replay", file.to_str().unwrap()]);
    assert!(r.status.success());
    let text = String::from_utf8_lossy(&r.stdout);
    assert_eq!(
        text.lines().filter(|l| l.contains("ENOSPC")).count() as u64,
        total
    );
    assert!(String::from_utf8_lossy(&r.stderr).contains("kernel_ring_drops"));
    let r = observer_cmd(&[
        "replay",
        file.to_str().unwrap(),
        "--json",
        "--pid",
        &early_pid.to_string(),
    ]);
    let picked = String::from_utf8_lossy(&r.stdout)
        .lines()
        .filter(|l| l.contains("\"type\":\"syscall\""))
        .count();
    assert_eq!(picked, 20, "replay filters by pid");
}

#[test]
fn a_full_dump_directory_is_counted_survived_and_recovered() {
    let a = Mount::tmpfs("size=64k");
    let dumps = Mount::tmpfs("size=64k");
    let filler = dumps.dir.join("filler");
    workload(&["fill", filler.to_str().unwrap()]);
    let obs = Observer::start(&[
        "--watch-mount",
        a.dir.to_str().unwrap(),
        "--set",
        &format!("recorder.dump_dir={}", dumps.dir.display()),
        "--set",
        "recorder.burst_errors=10",
        "--set",
        "recorder.burst_cooldown_secs=1",
        "--set",
        "recorder.max_events=30",
    ]);
    storm(&a.dir, "f", 100);
    obs.wait_metric("fsobserver_dumps_total{result=\"failed\"}", |v| v >= 1.0);
    assert_eq!(obs.http("/healthz"), (200, "ok\n".to_string()));
    assert!(
        obs.stderr().contains("cannot write a burst dump"),
        "{}",
        obs.stderr()
    );
    assert_eq!(
        std::fs::read_dir(&dumps.dir).unwrap().count(),
        1,
        "a failed dump leaves nothing behind"
    );

    std::fs::remove_file(&filler).unwrap();
    std::thread::sleep(Duration::from_millis(1200)); // the cooldown
    workload(&["fail-writes", a.dir.join("f").to_str().unwrap(), "100"]);
    obs.wait_metric("fsobserver_dumps_total{result=\"written\"}", |v| v >= 1.0);
    let (header, _) = read_dump(&wait_for_file(&dumps.dir));
    assert_eq!(header["reason"], "burst");
    assert_eq!(
        obs.stderr().matches("cannot write a burst dump").count(),
        1,
        "logged once"
    );
}

#[test]
fn a_million_distinct_paths_keep_series_and_memory_bounded() {
    // Under software emulation a million files take too long; the bound is the same.
    let n: u64 = if in_vm() { 20_000 } else { 1_000_000 };
    let m = Mount::tmpfs("size=256m");
    let obs = Observer::start(&[
        "--watch-mount",
        m.dir.to_str().unwrap(),
        "--delete-sample",
        "1",
        "--no-stdout",
        "--set",
        "aggregate.max_paths=1000",
        "--set",
        "aggregate.top_k=10",
    ]);
    let w = workload(&["churn", m.dir.to_str().unwrap(), &n.to_string()]);
    assert_eq!(w.get("failed"), "0");
    // Every leaf directory is its own rolled-up key: far more keys than the table holds.
    obs.wait_metric("fsobserver_aggregate_evicted_total{table=\"paths\"}", |v| {
        v >= (n / 2) as f64
    });
    let text = obs.metrics();
    let series: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let prefixes: std::collections::BTreeSet<&str> = series
        .iter()
        .filter_map(|l| l.split("path_prefix=\"").nth(1)?.split('"').next())
        .collect();
    assert!(prefixes.len() <= 11, "top 10 + other: {prefixes:?}");
    assert!(series.len() <= 120, "{} series:\n{text}", series.len());
    assert!(metric_value(&text, "fsobserver_aggregate_keys{table=\"paths\"}").unwrap() <= 1000.0);
    let rss = obs.rss_kib();
    assert!(rss < 160 * 1024, "daemon RSS {rss} KiB exceeds 160 MiB");
    eprintln!("{n} paths: {} series, RSS {} MiB", series.len(), rss / 1024);
}

#[test]
fn time_to_full_of_a_steady_fill_is_within_a_quarter() {
    let m = Mount::tmpfs("size=24m");
    let obs = Observer::start(&[
        "--watch-mount",
        m.dir.to_str().unwrap(),
        "--set",
        "capacity.sample_interval_ms=200",
        "--set",
        "capacity.window_secs=5",
    ]);
    // 64 KiB every 20 ms (3.2 MiB/s): full in about 7.5 s.
    let mut f = std::fs::File::create(m.dir.join("fill")).unwrap();
    let chunk = vec![1u8; 64 << 10];
    let start = Instant::now();
    let mut predicted = None;
    let mut i = 0u32;
    let full_at = loop {
        let due = start + Duration::from_millis(20) * i;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if f.write_all(&chunk).is_err() {
            break Instant::now();
        }
        i += 1;
        if predicted.is_none() && start.elapsed() > Duration::from_secs(3) {
            let cap = &obs.top()["capacity"][0];
            let secs = cap["bytes_full_in_secs"]
                .as_f64()
                .unwrap_or_else(|| panic!("no time-to-full while filling: {cap}"));
            predicted = Some((Instant::now(), secs));
        }
        assert!(start.elapsed() < Duration::from_secs(60), "never filled");
    };
    let (at, secs) = predicted.expect("a prediction was taken");
    let actual = full_at.duration_since(at).as_secs_f64();
    let err = (secs - actual).abs() / actual;
    eprintln!(
        "predicted {secs:.2} s, filled after {actual:.2} s ({:.0}% off)",
        err * 100.0
    );
    assert!(err <= 0.25, "predicted {secs:.2} s, actual {actual:.2} s");
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
    let run = Command::new(observer_bin())
        .args(["run", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
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
    let o = Command::new(observer_bin())
        .args(["config", "check", "/dev/null"])
        .env("OBSERVER__AGGREGATE__TOP_K", "lots")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("aggregate.top_k"));
}
