//! Child processes that can never hang a test (every wait has a limit), the workload helper,
//! client commands and HTTP calls.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::observer_bin;

/// How long a helper command (a workload, a client command, git, promtool...) may run before
/// it is killed and the test fails.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `cmd` to completion within `limit`, capturing stdout and stderr. A command that takes
/// longer is killed and the test fails naming it: a hung child fails the test, never hangs it.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    output_of(child, limit, &format!("{cmd:?}"))
}

/// The exit status and the piped output of a spawned `child` (described by `what`), within
/// `limit` (killed and failing the test after it).
pub fn output_of(mut child: Child, limit: Duration, what: &str) -> Output {
    use std::io::Read as _;
    let pipe = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _: Result<_, _> = r.read_to_end(&mut v);
            }
            v
        })
    };
    let out = pipe(child.stdout.take().map(|p| Box::new(p) as _));
    let err = pipe(child.stderr.take().map(|p| Box::new(p) as _));
    let status = wait_within(&mut child, limit, what);
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Waits for `child` (described by `what`) within `limit`; kills it and fails the test when it
/// takes longer.
pub fn wait_within(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    wait_timeout(child, limit)
        .unwrap_or_else(|| panic!("{what} did not finish within {limit:?}; it was killed"))
}

/// Starts `cmd` (stdout piped) and waits, at most [`CHILD_TIMEOUT`], for the first line it
/// prints — a child that says when it is ready; returns it with that line. A child that exits
/// or stays silent fails the test (and is killed).
pub fn spawn_ready(cmd: &mut Command) -> (Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let mut r = std::io::BufReader::new(out);
        let _: Result<_, _> = std::io::BufRead::read_line(&mut r, &mut line);
        let _: Result<_, _> = tx.send(line);
        // Keeps reading (and dropping) what follows, so the child never blocks on a full pipe.
        let _: Result<_, _> = std::io::copy(&mut r, &mut std::io::sink());
    });
    match rx.recv_timeout(CHILD_TIMEOUT) {
        Ok(line) if !line.is_empty() => (child, line),
        _ => {
            let _: Result<_, _> = child.kill();
            let _: Result<_, _> = child.wait();
            panic!("{cmd:?} said nothing within {CHILD_TIMEOUT:?} (or exited)")
        }
    }
}

pub(crate) fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() > deadline {
            let _: Result<_, _> = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// GET `http://addr/path`: (status, body). Panics when the daemon cannot be reached.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_call(false, addr, path, Duration::from_secs(10))
}

/// POST (empty body) to `http://addr/path`: (status, body). Long timeout: a purge run answers
/// when it has decided about every entry.
pub fn http_post(addr: &str, path: &str) -> (u16, String) {
    http_call(true, addr, path, Duration::from_secs(600))
}

fn http_call(post: bool, addr: &str, path: &str, timeout: Duration) -> (u16, String) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build(),
    );
    let url = format!("http://{addr}{path}");
    let resp = if post {
        agent.post(url).send_empty()
    } else {
        agent.get(url).call()
    }
    .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .into_with_config()
        .limit(256 << 20)
        .read_to_string()
        .expect("body");
    (status, body)
}

/// The value of one series in a Prometheus text exposition (`series` is everything before the
/// value: name and labels exactly as printed).
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs the observer binary with `args` (a client command) to completion.
pub fn observer_cmd(args: &[&str]) -> Output {
    output_within(Command::new(observer_bin()).args(args), CHILD_TIMEOUT)
}

/// Runs the workload helper to completion and returns its `key=value` result line fields.
pub fn workload(args: &[&str]) -> Workload {
    let out = output_within(&mut workload_cmd(args), CHILD_TIMEOUT);
    Workload::parse(out)
}

/// [`workload`] with `dir` as its working directory (relative names resolve there, so the
/// kernel knows their filesystem).
pub fn workload_in(dir: &Path, args: &[&str]) -> Workload {
    let out = output_within(workload_cmd(args).current_dir(dir), CHILD_TIMEOUT);
    Workload::parse(out)
}

pub fn workload_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(workload_bin());
    c.args(args);
    c
}

/// The workload helper binary.
pub fn workload_bin() -> PathBuf {
    // Integration-test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("fsobs-workload");
    assert!(bin.exists(), "{} not built", bin.display());
    bin
}

pub struct Workload {
    pub fields: Vec<(String, String)>,
    pub output: Output,
}

impl Workload {
    fn parse(output: Output) -> Workload {
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let fields = text
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Workload { fields, output }
    }

    pub fn get(&self, key: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("workload printed no {key}=; output: {:?}", self.output))
    }

    pub fn pid(&self) -> u64 {
        self.get("pid").parse().expect("pid")
    }
}
