//! Helpers of the purge tests: aged trees, purge configs, runs through the API, verdicts.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::*;

pub const DAY: i64 = 86_400;

/// Sets atime and mtime of `path` and everything below it to `secs_ago` (symlinks themselves).
pub fn age(path: &Path, secs_ago: i64) {
    use nix::sys::{
        stat::{UtimensatFlags, utimensat},
        time::TimeSpec,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = TimeSpec::new(now - secs_ago, 0);
    let meta = std::fs::symlink_metadata(path).expect("age: entry exists");
    if meta.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            age(&e.unwrap().path(), secs_ago);
        }
    }
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .expect("utimensat");
}

/// A directory with `n` small files.
pub fn tree(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("f{i}")), b"data").unwrap();
    }
}

/// Writes an observer config enabling purge with `policies` (TOML `[[purge.policies]]` tables)
/// into a directory outside every test filesystem.
pub fn config(dir: &Path, policies: &str) -> PathBuf {
    let path = dir.join("observer.toml");
    std::fs::write(&path, format!("[purge]\nenabled = true\n{policies}")).unwrap();
    path
}

pub fn start(cfg: &Path, extra: &[&str]) -> Observer {
    let mut args = vec!["--config", cfg.to_str().unwrap()];
    args.extend_from_slice(extra);
    Observer::start(&args)
}

/// A manual run of `policy` through the API; its report.
pub fn purge(obs: &Observer, policy: &str, execute: bool) -> Value {
    let (status, body) = http_post(
        obs.addr(),
        &format!("/purge?policy={policy}&execute={execute}"),
    );
    assert_eq!(status, 200, "POST /purge: {body}");
    let v: Value = serde_json::from_str(&body).expect("purge report is JSON");
    v["runs"][0].clone()
}

/// The item of `run` whose path ends with `suffix`.
pub fn item<'a>(run: &'a Value, suffix: &str) -> &'a Value {
    run["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["path"].as_str().is_some_and(|p| p.ends_with(suffix)))
        .unwrap_or_else(|| panic!("no item {suffix} in {run:#}"))
}

pub fn verdict(run: &Value, suffix: &str) -> (String, String) {
    let i = item(run, suffix);
    (
        i["action"].as_str().unwrap_or("").to_string(),
        i["skip"].as_str().unwrap_or("").to_string(),
    )
}

/// Waits until the background removal emptied the trash under `root`.
pub fn wait_trash_empty(root: &Path) {
    let trash = root.join(".fsobserver-trash");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = std::fs::read_dir(&trash).map(|d| d.count()).unwrap_or(0);
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} entries still in {}",
            trash.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn count_files(dir: &Path) -> usize {
    walk(dir).len()
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// A helper process holding `file` open (and flocked); killed on drop.
pub struct Holder(Child, pub u32);

impl Holder {
    pub fn new(file: &Path, how: &str) -> Holder {
        use std::io::BufRead as _;
        let mut child = workload_cmd(&["hold", file.to_str().unwrap(), how, "120"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("ready=1"), "holder: {line}");
        let pid = child.id();
        Holder(child, pid)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _: Result<_, _> = self.0.kill();
        let _: Result<_, _> = self.0.wait();
    }
}

pub fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    wait_within(&mut c, CHILD_TIMEOUT, "true");
    pid
}

/// Runs git in `dir`; panics (with git's message) when it fails: the test command installs git.
pub fn git(dir: &Path, args: &[&str]) {
    let out = output_within(
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args),
        CHILD_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
