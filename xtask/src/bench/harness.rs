//! What every benchmark uses: a tmpfs scratch space, a running observer, its CPU and memory,
//! HTTP calls to it, and medians.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use std::io::{BufRead as _, BufReader};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::toolchain::output as run;

pub(crate) struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub(crate) fn new() -> anyhow::Result<Scratch> {
        let dir = tempfile::Builder::new().prefix("fsobs-bench-").tempdir()?;
        for (name, opts) in [("fast", "size=4G,nr_inodes=4M"), ("full", "size=1M")] {
            let m = dir.path().join(name);
            fs::create_dir(&m)?;
            run(Command::new("mount")
                .args(["-t", "tmpfs", "-o", opts, "fsobs-bench"])
                .arg(&m))?;
        }
        let s = Scratch { dir };
        let filler = s.path("full/filler");
        let _: Result<_, _> = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={filler}"))
            .args(["bs=64k", "count=64"])
            .stderr(Stdio::null())
            .status();
        Ok(s)
    }

    pub(crate) fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for name in ["fast", "full"] {
            let _: Result<_, _> = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path().join(name))
                .status();
        }
    }
}

/// `key=value` fields of a workload's result line.
pub(crate) fn field(out: &str, key: &str) -> anyhow::Result<f64> {
    out.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("workload printed no {key}=: {out:?}"))
}

/// A running `observer run` (stdout to a file, never to the watched filesystems).
pub(crate) struct Observer {
    child: Child,
    stdout: PathBuf,
    /// HTTP API address (an ephemeral loopback port).
    pub(crate) addr: String,
}

impl Observer {
    pub(crate) fn start(bin: &Path, out_dir: &Path) -> anyhow::Result<Observer> {
        Self::start_with(bin, out_dir, &[])
    }

    pub(crate) fn start_with(
        bin: &Path,
        out_dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Observer> {
        let stdout = out_dir.join(format!("observer-{}.jsonl", std::process::id()));
        let mut addr = String::new();
        let mut child = Command::new(bin)
            .args(["run", "--stats-interval", "0", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("OBSERVER_LOG", "warn")
            .stdout(fs::File::create(&stdout)?)
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("fsobserver: probe mode") => break,
                Some(Ok(l)) => {
                    if let Some(a) = l.strip_prefix("fsobserver: api listening on ") {
                        addr = a.trim().to_string();
                    }
                }
                _ => bail!("observer did not start"),
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Observer {
            child,
            stdout,
            addr,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, wait, and return the final stats line.
    pub(crate) fn stop(mut self) -> anyhow::Result<Value> {
        run(Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string()))?;
        self.child.wait()?;
        let text = fs::read_to_string(&self.stdout)?;
        let _: Result<_, _> = fs::remove_file(&self.stdout);
        text.lines()
            .rev()
            .find_map(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .filter(|v| v["type"] == "stats")
            })
            .context("no final stats line")
    }
}

/// CPU seconds (user + system) a process has used.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm.
    (ticks(11) + ticks(12)) / 100.0
}

pub(crate) fn rss_peak_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

pub(crate) fn http_get(addr: &str, path: &str) -> Option<String> {
    http("GET", addr, path)
}

/// One HTTP/1.0 request without a body; the response body.
pub(crate) fn http(method: &str, addr: &str, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut c = std::net::TcpStream::connect(addr).ok()?;
    c.write_all(format!("{method} {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    c.read_to_string(&mut buf).ok()?;
    buf.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

/// `/healthz` round trips (ms), one every 10 ms until `stop`.
pub(crate) fn healthz_latencies(addr: &str, stop: &std::sync::atomic::AtomicBool) -> Vec<f64> {
    let mut v = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let t = Instant::now();
        if http_get(addr, "/healthz").is_some_and(|b| b.contains("ok")) {
            v.push(t.elapsed().as_secs_f64() * 1e3);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    v
}

/// A bench that fails half-way leaves no observer running (nor its output file).
impl Drop for Observer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _: Result<(), _> = self.child.kill();
            let _: Result<_, _> = self.child.wait();
        }
        let _: Result<(), _> = fs::remove_file(&self.stdout);
    }
}
