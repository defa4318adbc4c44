//! Helpers of the daemon test files: ENOSPC storms, `observer tail` as a child, dumps.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{Value, observer_bin, workload};

pub fn errors_series(syscall: &str, errno: &str, mount: &Path) -> String {
    format!(
        "fsobserver_syscall_errors_total{{syscall=\"{syscall}\",errno=\"{errno}\",mount=\"{}\"}}",
        mount.display()
    )
}

/// Fills `dir/name` until ENOSPC, then makes `n` more failing writes: returns (pid of the
/// second workload, total failed writes).
pub fn storm(dir: &Path, name: &str, n: u64) -> (u64, u64) {
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

pub fn enospc_write(row: &Value) -> u64 {
    row["errors"]["ENOSPC"]["write"].as_u64().unwrap_or(0)
}

/// A running `observer tail` whose stdout is collected.
pub struct Tail(pub std::process::Child);

impl Tail {
    pub fn start(addr: &str, extra: &[&str]) -> Tail {
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
    pub fn interrupt(mut self) -> Vec<String> {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::SIGINT).expect("SIGINT");
        let child = std::mem::replace(&mut self.0, Command::new("true").spawn().unwrap());
        let out = crate::output_of(child, Duration::from_secs(20), "tail after Ctrl-C");
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
        let _: Result<_, _> = self.0.kill();
        let _: Result<_, _> = self.0.wait();
    }
}

pub fn read_dump(path: &Path) -> (Value, Vec<Value>) {
    let text = std::fs::read_to_string(path).expect("dump");
    let mut lines = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"));
    let header = lines.next().expect("header");
    assert_eq!(header["type"], "dump-header", "{header}");
    (header, lines.collect())
}

pub fn enospc_events(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "syscall" && v["errno"] == 28)
        .collect()
}

pub fn wait_for_file(dir: &Path) -> std::path::PathBuf {
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
