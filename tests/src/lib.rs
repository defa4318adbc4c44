//! Harness for the real-kernel integration tests: a running observer process whose JSON Lines
//! output can be awaited, filesystems mounted for one test and always unmounted, the workload
//! helper, and children that can never hang a test. Everything cleans up in `Drop`, so a
//! failing (panicking) test leaves no mount and no BPF program behind.

pub mod container;
pub mod daemon;
pub mod fullfs;
pub mod hostile;
mod kernel;
pub mod locks;
mod mount;
mod process;
pub mod purge;
mod stats;

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

pub use kernel::*;
pub use mount::*;
pub use process::*;
pub use serde_json::Value;

/// The row of `rows` (a report's growth list) for directory `dir`.
pub fn dir_row<'a>(rows: &'a Value, dir: &str) -> Option<&'a Value> {
    rows.as_array()?.iter().find(|r| r["dir"] == dir)
}
pub use stats::*;

/// How long the observer may take to load and attach (verifier included). Under software
/// emulation verifying every program takes 12-50 s alone, and the guests share two cores with
/// the host tests beside them (a 5.10 guest once needed more than 60 s).
#[cfg(not(fsobs_vm))]
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
#[cfg(fsobs_vm)]
pub const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long an expected event may take to arrive.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// The observer binary under test (`OBSERVER_BIN`, set by `cargo xtask test`).
pub fn observer_bin() -> PathBuf {
    let p = std::env::var_os("OBSERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/observer")
        });
    assert!(
        p.exists(),
        "observer binary {} not found: run the tests with `cargo xtask test`",
        p.display()
    );
    p
}

/// A running `observer run`.
pub struct Observer {
    child: Option<Child>,
    lines: mpsc::Receiver<Value>,
    stderr: Arc<Mutex<String>>,
    /// The start-up line (`fsobserver: probe mode ...`).
    pub startup: String,
    /// Address of the HTTP API (`host:port`), when it listens on TCP.
    pub addr: Option<String>,
    /// Every address announced at start-up: (`api` or `metrics`, `host:port` or `unix:PATH`).
    pub listening: Vec<(String, String)>,
    /// Every stdout line received so far.
    pub seen: Vec<Value>,
}

impl Observer {
    /// Starts the observer with extra `run` arguments and waits until its programs are attached.
    /// The API listens on an ephemeral loopback port unless the arguments pick the address.
    pub fn start(args: &[&str]) -> Observer {
        if args.iter().any(|a| a.starts_with("--listen")) {
            Self::start_configured(args)
        } else {
            Self::start_configured(&[&["--listen", "127.0.0.1:0"], args].concat())
        }
    }

    /// Starts the observer with exactly these `run` arguments (the doors as configured).
    pub fn start_configured(args: &[&str]) -> Observer {
        require_root();
        let started = Instant::now();
        let mut cmd = Command::new(observer_bin());
        cmd.arg("run").args(["--stats-interval", "0"]);
        // Growth counting is on by default; it doubles what the verifier walks through, which
        // under emulation (the VM cells) costs tens of seconds per start. Tests that are not
        // about growth run without it; the growth and report tests turn it on.
        if !args.iter().any(|a| a.starts_with("growth.")) {
            cmd.args(["--set", "growth.enabled=false"]);
        }
        cmd.args(args)
            .env("OBSERVER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The observer stops (SIGTERM: programs detached) when the thread that started it
        // ends, even if the test process is killed.
        // SAFETY: prctl(2) only, between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn observer");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("observer printed a non-JSON line {line:?}: {e}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (start_tx, start_rx) = mpsc::channel();
        let listening = Arc::new(Mutex::new(Vec::new()));
        let listening_w = listening.clone();
        let err_buf = stderr.clone();
        let child_stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(child_stderr).lines().map_while(Result::ok) {
                if let Some(door) = announced(&line) {
                    listening_w.lock().unwrap().push(door);
                }
                if line.starts_with("fsobserver: probe mode") {
                    let _: Result<_, _> = start_tx.send(line.clone());
                }
                let mut b = err_buf.lock().unwrap();
                b.push_str(&line);
                b.push('\n');
            }
        });
        let mut obs = Observer {
            child: Some(child),
            lines,
            stderr,
            startup: String::new(),
            addr: None,
            listening: Vec::new(),
            seen: Vec::new(),
        };
        match start_rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => obs.startup = line,
            Err(_) => panic!("observer did not start; stderr:\n{}", obs.stderr()),
        }
        obs.listening = listening.lock().unwrap().clone();
        obs.addr = obs
            .listening
            .iter()
            .find(|(door, a)| door == "api" && !a.starts_with("unix:"))
            .map(|(_, a)| a.clone());
        // Shown with the test's output when it fails (and with --nocapture).
        eprintln!("observer {args:?} started in {:?}", started.elapsed());
        obs
    }

    /// The observer of this test binary started with `args`, started on first use and shared
    /// by every test that needs nothing else of it: a start costs a second or two here and
    /// 12-15 s under software emulation (verifying every program). Its events are every
    /// test's, so a test looks only at its own processes, paths and filesystems; kernel counts
    /// come from [`Observer::stats`]. It stops when the test binary exits.
    pub fn shared(args: &[&str]) -> std::sync::MutexGuard<'static, Observer> {
        type Shared = Mutex<Vec<(Vec<String>, &'static Mutex<Observer>)>>;
        static SHARED: std::sync::OnceLock<Shared> = std::sync::OnceLock::new();
        let key: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut all = SHARED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let obs = match all.iter().find(|(k, _)| *k == key) {
            Some((_, o)) => *o,
            None => {
                // Started from a thread that lives as long as the process: the child's
                // parent-death signal fires when its spawning thread ends.
                let (tx, rx) = mpsc::channel();
                let owned = key.clone();
                std::thread::spawn(move || {
                    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
                    let _: Result<(), _> = tx.send(Observer::start(&args));
                    loop {
                        std::thread::park();
                    }
                });
                let o: &'static Mutex<Observer> = Box::leak(Box::new(Mutex::new(
                    rx.recv().expect("the shared observer started"),
                )));
                all.push((key, o));
                o
            }
        };
        drop(all);
        let mut guard = obs.lock().unwrap_or_else(|p| p.into_inner());
        // Each test starts from what arrives from now on.
        guard.drain();
        guard.seen.clear();
        guard
    }

    /// `GET /stats`: the stats line now (exact kernel counts, losses).
    pub fn stats(&self) -> Value {
        self.stats_at("/stats")
    }

    /// [`Self::stats`] with `deletes_by_process` holding process `pid`'s row alone (the list is
    /// otherwise the node's 20 busiest, which other tests' processes may fill).
    pub fn stats_for(&self, pid: u64) -> Value {
        self.stats_at(&format!("/stats?pid={pid}"))
    }

    fn stats_at(&self, path: &str) -> Value {
        let (status, body) = self.http(path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).expect("/stats is JSON")
    }

    /// Waits until every record the kernel wrote before this call has been handled: a marker
    /// (a failing `utimensat` of a name that cannot exist, always reported) goes through the
    /// same ring behind them. Returns every line seen so far.
    pub fn barrier(&mut self) -> &[Value] {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let marker = format!(
            "/nonexistent-fsobs-barrier/{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let c = std::ffi::CString::new(marker.clone()).unwrap();
        // SAFETY: utimensat(2) with a valid C string and no times; it fails with ENOENT.
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) };
        self.wait_for(&marker, |v| v["path"] == marker.as_str());
        &self.seen
    }

    /// Every stdout line that has arrived so far, appended to [`Observer::seen`].
    pub fn drain(&mut self) -> &[Value] {
        while let Ok(v) = self.lines.try_recv() {
            self.seen.push(v);
        }
        &self.seen
    }

    /// The metrics door's `host:port`, when it has its own.
    pub fn metrics_addr(&self) -> Option<&str> {
        self.listening
            .iter()
            .find(|(door, _)| door == "metrics")
            .map(|(_, a)| a.as_str())
    }

    /// The API's Unix socket, when it has one.
    pub fn unix_socket(&self) -> Option<PathBuf> {
        self.listening
            .iter()
            .find_map(|(_, a)| a.strip_prefix("unix:"))
            .map(PathBuf::from)
    }

    /// `host:port` of the HTTP API.
    pub fn addr(&self) -> &str {
        self.addr
            .as_deref()
            .expect("the observer announced no http address")
    }

    /// GET `path` on the HTTP API: (status, body).
    pub fn http(&self, path: &str) -> (u16, String) {
        http_get(self.addr(), path)
    }

    /// The daemon's `/report` with `query` (e.g. `purge=false`).
    pub fn report(&self, query: &str) -> Value {
        let (status, body) = self.http(&format!("/report?{query}"));
        assert_eq!(status, 200, "GET /report: {body}");
        serde_json::from_str(&body).expect("report is JSON")
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        let (status, body) = self.http("/metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        body
    }

    /// The `/top` answer.
    pub fn top(&self) -> Value {
        let (status, body) = self.http("/top");
        assert_eq!(status, 200, "/top: {body}");
        serde_json::from_str(&body).expect("/top is JSON")
    }

    /// Resident set size of the observer process in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Polls `/metrics` until `pred` holds for the value of `series` (the exact text before the
    /// value, e.g. `fsobserver_heartbeats_total{result="ok"}`); returns the last value seen.
    pub fn wait_metric(&self, series: &str, pred: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let text = self.metrics();
            let v = metric_value(&text, series);
            if v.is_some_and(&pred) {
                return v.unwrap();
            }
            if Instant::now() > deadline {
                panic!("{series} never satisfied the condition (last {v:?}); /metrics:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits for the first event (new or already seen) matching `pred`.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no event matching {what} within {EVENT_TIMEOUT:?}; saw {} lines:\n{}\nstderr:\n{}",
            self.seen.len(),
            self.seen
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            self.stderr()
        );
    }

    /// SIGTERM, wait for a clean exit, and return every stdout line (the last is the final
    /// stats line).
    pub fn stop(mut self) -> Vec<Value> {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::SIGTERM,
        )
        .expect("SIGTERM");
        let stopping = Instant::now();
        let status = wait_timeout(&mut child, Duration::from_secs(30))
            .expect("observer did not exit after SIGTERM");
        let exited = stopping.elapsed();
        while let Ok(v) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(v);
        }
        eprintln!(
            "observer exited {exited:?} after SIGTERM, its output was read {:?} after",
            stopping.elapsed()
        );
        assert!(
            status.success(),
            "observer exited with {status}; stderr:\n{}",
            self.stderr()
        );
        std::mem::take(&mut self.seen)
    }
}

/// `fsobserver: <door> listening on <address>` (the API door is `api`, older builds said
/// `http`): (door, address).
fn announced(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("fsobserver: ")?;
    let (door, addr) = rest.split_once(" listening on ")?;
    let door = if door == "http" { "api" } else { door };
    matches!(door, "api" | "metrics").then(|| (door.to_string(), addr.trim().to_string()))
}

impl Drop for Observer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _: Result<_, _> = c.kill();
            let _: Result<_, _> = c.wait();
        }
    }
}
