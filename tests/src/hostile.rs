//! What an attacker on the node has: another network namespace, a filesystem that hangs, raw
//! HTTP connections that never finish. Everything made here is removed on drop.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{CHILD_TIMEOUT, output_within};

fn ip(args: &[&str]) {
    let out = output_within(Command::new("ip").args(args), CHILD_TIMEOUT);
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace joined to this one by a veth pair: this side `10.201.N.1`, the other
/// `10.201.N.2`. Only addresses made here are used.
pub struct Netns {
    pub name: String,
    host_if: String,
    /// This side's address (where the observer can listen for the namespace to reach it).
    pub host_addr: String,
    /// `/run/netns` was not a mount point before: `ip netns add` made it one (on first use),
    /// so the drop undoes that too once no namespace is left.
    unmount_run_netns: bool,
    /// `/run/netns` did not exist before (`ip` made it): removed again once empty.
    remove_run_netns: bool,
}

/// Whether `/run/netns` is a mount point.
fn run_netns_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.split(' ').nth(4) == Some("/run/netns")))
        .unwrap_or(false)
}

impl Netns {
    pub fn create() -> Netns {
        let n = std::process::id() % 200 + 20;
        let name = format!("fsobs-sec-{n}");
        let (host_if, ns_if) = (format!("fsobs{n}a"), format!("fsobs{n}b"));
        let unmount_run_netns = !run_netns_mounted();
        let remove_run_netns = !Path::new("/run/netns").exists();
        ip(&["netns", "add", &name]);
        let ns = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
            host_addr: format!("10.201.{n}.1"),
            unmount_run_netns,
            remove_run_netns,
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &name,
        ]);
        ip(&["addr", "add", &format!("10.201.{n}.1/24"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut a = vec!["netns", "exec", &name, "ip"];
            a.extend_from_slice(args);
            ip(&a);
        };
        inside(&["addr", "add", &format!("10.201.{n}.2/24"), "dev", &ns_if]);
        inside(&["link", "set", &ns_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        ns
    }

    /// `curl` run inside the namespace: (HTTP status, body); status 0 when nothing answered.
    pub fn curl(&self, method: &str, url: &str, token: Option<&str>) -> (u16, String) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, "curl", "-s", "-m", "10"])
            .args(["-X", method, "-w", "\n%{http_code}", url]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let out = output_within(&mut cmd, CHILD_TIMEOUT);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _: Result<_, _> = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _: Result<_, _> = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let empty = std::fs::read_dir("/run/netns").is_ok_and(|mut d| d.next().is_none());
        if self.unmount_run_netns && empty && run_netns_mounted() {
            let _: Result<_, _> = Command::new("umount").arg("/run/netns").status();
        }
        if self.remove_run_netns && empty {
            let _: Result<_, _> = std::fs::remove_dir("/run/netns");
        }
    }
}

/// A FUSE filesystem (Debian's fusepy) whose daemon can be stopped: a stopped daemon is a hung
/// filesystem — `statvfs` and lookups on it block.
pub struct HungFs {
    pub dir: PathBuf,
    daemon: Option<Child>,
    _base: tempfile::TempDir,
}

const FS: &str = r#"
import errno, stat, sys
import fusepy as fuse
class FS(fuse.Operations):
    def getattr(self, path, fh=None):
        if path == "/":
            return dict(st_mode=stat.S_IFDIR | 0o755, st_nlink=2)
        raise fuse.FuseOSError(errno.ENOENT)
    def readdir(self, path, fh):
        return [".", ".."]
    def statfs(self, path):
        return dict(f_bsize=4096, f_frsize=4096, f_blocks=1000, f_bfree=500, f_bavail=500,
                    f_files=100, f_ffree=50, f_favail=50, f_namemax=255)
fuse.FUSE(FS(), sys.argv[1], foreground=True)
"#;

impl HungFs {
    /// Mounts it (answering) at a fresh directory.
    pub fn mount() -> HungFs {
        let base = tempfile::Builder::new()
            .prefix("fsobs-test-fuse-")
            .tempdir()
            .unwrap();
        let dir = base.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        let daemon = crate::fullfs::fuse_daemon(base.path(), FS, &[&dir]);
        HungFs {
            dir,
            daemon: Some(daemon),
            _base: base,
        }
    }

    /// Stops its daemon: from now on, calls on it hang.
    pub fn hang(&self) {
        self.signal(nix::sys::signal::SIGSTOP);
    }

    /// Lets its daemon answer again.
    pub fn resume(&self) {
        self.signal(nix::sys::signal::SIGCONT);
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(d) = &self.daemon {
            let _: Result<_, _> =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.id() as i32), sig);
        }
    }
}

impl Drop for HungFs {
    fn drop(&mut self) {
        self.signal(nix::sys::signal::SIGCONT);
        let _: Result<_, _> = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
        if let Some(mut d) = self.daemon.take() {
            let _: Result<_, _> = d.kill();
            let _: Result<_, _> = d.wait();
        }
    }
}

/// A TCP connection that sent `bytes` (e.g. half a request) and then nothing.
pub fn stalled_connection(addr: &str, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(bytes).expect("write");
    s
}

/// Whether the server closed `s` within `within` (reads EOF or an error).
pub fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// A directory name no filesystem test should ever need: quotes, a backslash, a newline and
/// a forged metric line, braces, an ANSI escape.
pub fn hostile_name() -> String {
    "q\"x\\y\nevil_series{a=\"b\"} 1\n#{}\x1b[31mred".to_string()
}

/// Runs `promtool check metrics` on `text`: (success, what it said).
pub fn promtool_check(text: &str) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (the test command installs prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = crate::output_of(child, CHILD_TIMEOUT, "promtool check metrics");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit 3: lint findings only (e.g. "no help text" for `_total` samples of an OpenMetrics
    // family); the exposition parsed. A parse failure is exit 1, "error while linting".
    let parsed = matches!(out.status.code(), Some(0 | 3))
        && !said.contains("error while linting")
        && !said.contains("parsing error");
    (parsed, said)
}

/// The directories of `path`, made.
pub fn mkdirs(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
}
