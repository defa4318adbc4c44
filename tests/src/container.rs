//! Real containers for the node-reality tests: podman with runc and the cgroupfs manager (this
//! host's cgroups are hybrid, which crun refuses), its storage and state in a temporary directory
//! of the test, a root filesystem made from the workload helper and the libraries it links, no
//! network. Every container is removed on drop, so a failing test leaves none behind.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use crate::{CHILD_TIMEOUT, output_within, require_root, workload_bin};

/// Where podman is installed (by `cargo xtask test`, from Debian's packages).
pub const PODMAN: &str = "/usr/bin/podman";

/// A podman whose storage, run state and temporary files are all under one test directory.
pub struct Podman {
    base: tempfile::TempDir,
    rootfs: PathBuf,
    names: std::cell::RefCell<Vec<String>>,
}

impl Podman {
    /// A podman for one test, with a root filesystem holding `/fsobs-workload`.
    pub fn isolated() -> Podman {
        require_root();
        assert!(
            Path::new(PODMAN).exists(),
            "podman is not installed (cargo xtask test installs it)"
        );
        let base = tempfile::Builder::new()
            .prefix("fsobs-podman-")
            .tempdir()
            .expect("tempdir");
        let rootfs = base.path().join("rootfs");
        make_rootfs(&rootfs, &workload_bin(), "fsobs-workload");
        Podman {
            base,
            rootfs,
            names: Default::default(),
        }
    }

    /// `podman` with this test's storage and the runtime this host needs.
    pub fn cmd(&self) -> Command {
        let b = self.base.path();
        let mut c = Command::new(PODMAN);
        c.arg("--root")
            .arg(b.join("storage"))
            .arg("--runroot")
            .arg(b.join("run"))
            .arg("--tmpdir")
            .arg(b.join("tmp"))
            .args([
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
            ]);
        c
    }

    fn run_args(&self, c: &mut Command, volumes: &[(&Path, &str)]) {
        c.args(["--network", "none"]).args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]);
        for (host, inside) in volumes {
            c.arg("-v").arg(format!("{}:{inside}", host.display()));
        }
        c.arg("--rootfs").arg(&self.rootfs).arg("/fsobs-workload");
    }

    /// Starts a container running `fsobs-workload ARGS` with `volumes` (node path, path inside)
    /// and returns its full id once it runs.
    pub fn start(&self, name: &str, volumes: &[(&Path, &str)], args: &[&str]) -> String {
        let mut c = self.cmd();
        c.args(["run", "-d", "--name", name]);
        self.run_args(&mut c, volumes);
        c.args(args);
        self.names.borrow_mut().push(name.to_string());
        let out = ok(&mut c, "podman run -d");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs `fsobs-workload ARGS` inside the running container `name`.
    pub fn exec(&self, name: &str, args: &[&str]) -> String {
        let mut c = self.cmd();
        c.args(["exec", name, "/fsobs-workload"]).args(args);
        let out = output_within(&mut c, CHILD_TIMEOUT);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for name in self.names.borrow().iter() {
            let mut c = self.cmd();
            c.args(["rm", "-f", "-t", "0", name]);
            let out = output_within(&mut c, CHILD_TIMEOUT);
            if !out.status.success() {
                eprintln!(
                    "warning: podman rm {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

fn ok(c: &mut Command, what: &str) -> Output {
    let out = output_within(c, CHILD_TIMEOUT);
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A root filesystem at `dir`: `bin` as `/NAME`, the shared libraries it links (from `ldd`),
/// and the mount points runc needs.
pub fn make_rootfs(dir: &Path, bin: &Path, name: &str) {
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(dir.join(d)).expect("rootfs dirs");
    }
    std::fs::copy(bin, dir.join(name)).expect("copy binary");
    let out = output_within(Command::new("ldd").arg(bin), CHILD_TIMEOUT);
    for lib in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = dir.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().expect("lib dir")).expect("lib dir");
        std::fs::copy(lib, &to).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
    }
}
