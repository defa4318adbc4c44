//! Harness for the real-kernel integration tests: a running observer process whose JSON Lines
//! output can be awaited, filesystems mounted for one test and always unmounted, and the
//! workload helper. Everything cleans up in `Drop`, so a failing (panicking) test leaves no
//! mount and no BPF program behind.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

pub use serde_json::Value;

/// How long the observer may take to load and attach (verifier included).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
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

/// The probe mode an observer started by these tests runs in: the mode forced through
/// `OBSERVER_PROBE_MODE` (the VM cells force one), else what `auto` picks on this kernel —
/// fexit where the kernel allows BPF trampolines ([`kernel_allows_fexit`]), tracepoints
/// otherwise.
pub fn expected_mode() -> String {
    match std::env::var("OBSERVER_PROBE_MODE") {
        Ok(m) if m != "auto" && !m.is_empty() => m,
        _ if kernel_allows_fexit() => "fexit".into(),
        _ => "tracepoint".into(),
    }
}

/// Whether the tests run inside a `cargo xtask vm-test` guest (software emulation: slower, so
/// some workloads are smaller there).
pub fn in_vm() -> bool {
    std::env::var_os("OBSERVER_IN_VM").is_some()
}

/// Whether this kernel lets a BPF program attach as fexit to `vfs_write`: loads and attaches
/// a two-instruction program with raw `bpf(2)` calls (independently of the observer) and
/// detaches it again. Some kernels refuse trampolines (EPERM), e.g. under lockdown.
pub fn kernel_allows_fexit() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(fexit_probe::try_attach)
}

mod fexit_probe {
    use std::os::fd::{FromRawFd as _, OwnedFd};

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
    const BPF_PROG_TYPE_TRACING: u32 = 26;
    const BPF_TRACE_FEXIT: u32 = 25;

    fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> i64 {
        // SAFETY: bpf(2) with a zero-padded attribute buffer of the size we pass.
        unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr.as_mut_ptr(),
                attr.len() as libc::c_uint,
            )
        }
    }

    fn put<const N: usize>(attr: &mut [u8; 128], off: usize, v: [u8; N]) {
        attr[off..off + N].copy_from_slice(&v);
    }

    pub fn try_attach() -> bool {
        let Ok(btf) = btf_rs::Btf::from_file("/sys/kernel/btf/vmlinux") else {
            return false;
        };
        let Some(id) = btf.resolve_ids_by_name("vfs_write").ok().and_then(|ids| {
            ids.into_iter()
                .find(|id| matches!(btf.resolve_type_by_id(*id), Ok(btf_rs::Type::Func(_))))
        }) else {
            return false;
        };
        // r0 = 0; exit
        let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
        let license = b"GPL\0";
        let mut attr = [0u8; 128];
        put(&mut attr, 0, BPF_PROG_TYPE_TRACING.to_ne_bytes()); // prog_type
        put(&mut attr, 4, 2u32.to_ne_bytes()); // insn_cnt
        put(&mut attr, 8, (insns.as_ptr() as u64).to_ne_bytes()); // insns
        put(&mut attr, 16, (license.as_ptr() as u64).to_ne_bytes()); // license
        put(&mut attr, 68, BPF_TRACE_FEXIT.to_ne_bytes()); // expected_attach_type
        put(&mut attr, 108, id.to_ne_bytes()); // attach_btf_id
        let prog = bpf(BPF_PROG_LOAD, &mut attr);
        if prog < 0 {
            return false;
        }
        // SAFETY: a new fd the kernel gave us; closing it unloads the program.
        let _prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
        let mut attr = [0u8; 128];
        put(&mut attr, 8, (prog as u32).to_ne_bytes()); // raw_tracepoint.prog_fd
        let link = bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr);
        if link < 0 {
            return false;
        }
        // SAFETY: as above; closing it detaches the program.
        drop(unsafe { OwnedFd::from_raw_fd(link as i32) });
        true
    }
}

/// Panics unless running as root (these tests load BPF programs and mount filesystems).
pub fn require_root() {
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "integration tests need root (they load BPF programs and mount filesystems)"
    );
}

/// A running `observer run`.
pub struct Observer {
    child: Option<Child>,
    lines: mpsc::Receiver<Value>,
    stderr: Arc<Mutex<String>>,
    /// The start-up line (`fsobserver: probe mode ...`).
    pub startup: String,
    /// Address of the HTTP API (`host:port`), when it listens.
    pub addr: Option<String>,
    /// Every stdout line received so far.
    pub seen: Vec<Value>,
}

impl Observer {
    /// Starts the observer with extra `run` arguments and waits until its programs are attached.
    pub fn start(args: &[&str]) -> Observer {
        require_root();
        // An ephemeral port unless the test picks the address.
        let listen: &[&str] = if args.iter().any(|a| a.starts_with("--listen")) {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(observer_bin())
            .arg("run")
            .args(["--stats-interval", "0"])
            .args(listen)
            .args(args)
            .env("OBSERVER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn observer");
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
        let addr = Arc::new(Mutex::new(None));
        let addr_w = addr.clone();
        let err_buf = stderr.clone();
        let child_stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(child_stderr).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("fsobserver: http listening on ") {
                    *addr_w.lock().unwrap() = Some(a.trim().to_string());
                }
                if line.starts_with("fsobserver: probe mode") {
                    let _ = start_tx.send(line.clone());
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
            seen: Vec::new(),
        };
        match start_rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => obs.startup = line,
            Err(_) => panic!("observer did not start; stderr:\n{}", obs.stderr()),
        }
        obs.addr = addr.lock().unwrap().clone();
        obs
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
        let status = wait_timeout(&mut child, Duration::from_secs(30))
            .expect("observer did not exit after SIGTERM");
        while let Ok(v) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(v);
        }
        assert!(
            status.success(),
            "observer exited with {status}; stderr:\n{}",
            self.stderr()
        );
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

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
                let _ = r.read_to_end(&mut v);
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

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
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

/// The final `{"type":"stats"}` line of a stopped observer.
pub fn final_stats(lines: &[Value]) -> &Value {
    lines
        .iter()
        .rev()
        .find(|v| v["type"] == "stats")
        .expect("a final stats line")
}

/// Whether the running kernel is at least `major.minor`.
pub fn kernel_at_least(major: u64, minor: u64) -> bool {
    let uts = nix::sys::utsname::uname().expect("uname");
    let release = uts.release().to_string_lossy().into_owned();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u64>().ok());
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    version >= (major, minor)
}

/// `major:minor` of the filesystem `dir` is on (as stats lines name filesystems).
pub fn mount_dev(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let d = std::fs::metadata(dir).expect("stat").dev();
    format!("{}:{}", libc::major(d), libc::minor(d))
}

/// Exact in-kernel failure count for (syscall, errno) on filesystem `dev` (`major:minor`):
/// calls the kernel resolved to that filesystem (fd-based or relative names), so nothing
/// another process did elsewhere is in it.
pub fn error_count_on(stats: &Value, syscall: &str, errno: u64, dev: &str) -> u64 {
    stats["errors"]
        .as_array()
        .expect("errors array")
        .iter()
        .filter(|e| e["syscall"] == syscall && e["errno"] == errno && e["dev"] == dev)
        .map(|e| e["count"].as_u64().unwrap())
        .sum()
}

/// Exact in-kernel failure count for (syscall, errno), all filesystems.
pub fn error_count(stats: &Value, syscall: &str, errno: u64) -> u64 {
    stats["errors"]
        .as_array()
        .expect("errors array")
        .iter()
        .filter(|e| e["syscall"] == syscall && e["errno"] == errno)
        .map(|e| e["count"].as_u64().unwrap())
        .sum()
}

/// The `deletes_by_process` row of `pid` in a stats line; panics (showing the stats) if absent.
pub fn delete_row(stats: &Value, pid: u64) -> Value {
    stats["deletes_by_process"]
        .as_array()
        .expect("deletes_by_process array")
        .iter()
        .find(|r| r["pid"] == pid)
        .cloned()
        .unwrap_or_else(|| panic!("pid {pid} not in deletes_by_process: {stats}"))
}

/// A filesystem mounted on a fresh temporary directory; unmounted (lazily, so a busy mount
/// cannot make cleanup fail) and removed on drop.
pub struct Mount {
    pub dir: PathBuf,
    _base: Option<tempfile::TempDir>,
}

impl Mount {
    pub fn tmpfs(options: &str) -> Mount {
        require_root();
        let base = tempfile::Builder::new()
            .prefix("fsobs-test-")
            .tempdir()
            .expect("tempdir");
        let dir = base.path().join("mnt");
        std::fs::create_dir(&dir).expect("mkdir");
        nix::mount::mount(
            Some("fsobs-test"),
            &dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(options),
        )
        .unwrap_or_else(|e| panic!("mount tmpfs -o {options} on {}: {e}", dir.display()));
        let dir = std::fs::canonicalize(&dir).expect("canonicalize");
        Mount {
            dir,
            _base: Some(base),
        }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir
            .join(name)
            .to_str()
            .expect("utf-8 path")
            .to_string()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("warning: umount {}: {e}", self.dir.display());
        }
    }
}

/// Whether `dir` is a mount point in this mount namespace.
pub fn is_mounted(dir: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let want = dir.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(want))
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
    // Integration-test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("fsobs-workload");
    assert!(bin.exists(), "{} not built", bin.display());
    let mut c = Command::new(bin);
    c.args(args);
    c
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

/// Ids of the kernel's loaded BPF programs whose name starts with `fso_` (ours).
pub fn loaded_observer_programs() -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("fso_")))
        .map(|p| p.id())
        .collect()
}

impl Mount {
    /// A read-only bind mount of `src` (writes and utimes through it fail with EROFS).
    pub fn bind_readonly(src: &Path) -> Mount {
        let guard = Mount::bind(src);
        guard.remount_readonly();
        guard
    }

    /// A bind mount of `src` onto the existing directory `target` (unmounted on drop).
    pub fn bind_at(src: &Path, target: &Path) -> Mount {
        require_root();
        nix::mount::mount(
            Some(src),
            target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind mount");
        Mount {
            dir: target.to_path_buf(),
            _base: None,
        }
    }

    /// A read-write bind mount of `src` (the same filesystem under a second path).
    pub fn bind(src: &Path) -> Mount {
        use nix::mount::{MsFlags, mount};
        require_root();
        let base = tempfile::Builder::new()
            .prefix("fsobs-test-bind-")
            .tempdir()
            .expect("tempdir");
        let dir = base.path().join("bind");
        std::fs::create_dir(&dir).expect("mkdir");
        mount(
            Some(src),
            &dir,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind mount");
        let dir = std::fs::canonicalize(&dir).expect("canonicalize");
        Mount {
            dir,
            _base: Some(base),
        }
    }

    /// Makes this (bind) mount read-only in place.
    pub fn remount_readonly(&self) {
        use nix::mount::{MsFlags, mount};
        mount(
            None::<&str>,
            &self.dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .expect("remount read-only");
    }
}

/// A loop-mounted btrfs with quotas on and a subvolume limited by a qgroup (the test command
/// installs btrfs-progs; without it the test fails).
pub struct BtrfsQuota {
    pub subvol: PathBuf,
    mount: Mount,
}

impl BtrfsQuota {
    pub fn new(limit: &str) -> BtrfsQuota {
        require_root();
        assert!(
            which("mkfs.btrfs").is_some(),
            "mkfs.btrfs is missing (cargo xtask test installs btrfs-progs)"
        );
        let base = tempfile::Builder::new()
            .prefix("fsobs-test-btrfs-")
            .tempdir()
            .expect("tempdir");
        let image = base.path().join("image");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
        run(&["mkfs.btrfs", "-q", "-f", image.to_str().unwrap()]);
        let dir = base.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        run(&[
            "mount",
            "-o",
            "loop",
            image.to_str().unwrap(),
            dir.to_str().unwrap(),
        ]);
        let dir = std::fs::canonicalize(&dir).unwrap();
        let mount = Mount {
            dir,
            _base: Some(base),
        };
        let subvol = mount.dir.join("sv");
        let d = mount.dir.to_str().unwrap();
        run(&["btrfs", "quota", "enable", d]);
        run(&["btrfs", "subvolume", "create", subvol.to_str().unwrap()]);
        run(&["btrfs", "qgroup", "limit", limit, subvol.to_str().unwrap()]);
        BtrfsQuota { subvol, mount }
    }

    pub fn mount_dir(&self) -> &Path {
        &self.mount.dir
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
}

fn run(args: &[&str]) {
    let out = output_within(Command::new(args[0]).args(&args[1..]), CHILD_TIMEOUT);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
