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
    /// Every container's cgroup parent (`/fsobs-test-<random>`), removed on drop.
    cgroups: String,
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
        let tag = base
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().replace("fsobs-podman-", ""))
            .unwrap_or_default();
        Podman {
            base,
            rootfs,
            names: Default::default(),
            cgroups: format!("/fsobs-test-{tag}"),
        }
    }

    /// A pod's cgroup under this test's parent, in the kubelet's cgroupfs layout
    /// (`.../pod<UID>`), for [`Podman::start_in`].
    pub fn pod_cgroup(&self) -> CgroupParent {
        let r: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64
            ^ (u64::from(std::process::id()) << 32);
        let hex = format!("{r:016x}{:016x}", r.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15);
        let pod_uid = format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        );
        CgroupParent {
            path: format!("{}/pod{pod_uid}", self.cgroups),
            pod_uid,
        }
    }

    /// `podman` with this test's storage and the runtime this host needs.
    pub fn cmd(&self) -> Command {
        let b = self.base.path();
        let mut c = Command::new(PODMAN);
        // Image layers are staged under TMPDIR (/var/tmp otherwise).
        c.env("TMPDIR", b);
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
                // No overlay mounts on the machine: image layers are plain copies.
                "--storage-driver",
                "vfs",
            ]);
        c
    }

    /// The test's own directory (for volumes it hands to containers).
    pub fn dir(&self) -> &Path {
        self.base.path()
    }

    /// Loads the observer's image (`OBSERVER_IMAGE`, built by `cargo xtask test`) into this
    /// test's store and returns its reference.
    pub fn load_observer_image(&self) -> String {
        let archive = std::env::var_os("OBSERVER_IMAGE")
            .expect("OBSERVER_IMAGE is not set: run the tests with `cargo xtask test`");
        let mut c = self.cmd();
        c.args(["load", "-q", "-i"]).arg(&archive);
        let out = ok(&mut c, "podman load");
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .rsplit(' ')
            .next()
            .expect("podman load names the image")
            .to_string()
    }

    /// Runs a detached container named `name` with these `podman run` arguments (options, image
    /// and command); removed on drop.
    pub fn run_detached(&self, name: &str, args: &[String]) {
        let mut c = self.cmd();
        c.args(["run", "-d", "--name", name])
            .args(["--cgroup-parent", &self.cgroups])
            .args(args);
        self.names.borrow_mut().push(name.to_string());
        ok(&mut c, "podman run -d");
    }

    /// Runs a container to its end with these `podman run` arguments; its output.
    pub fn run_to_end(&self, args: &[String]) -> Output {
        let mut c = self.cmd();
        c.args(["run", "--rm", "--cgroup-parent", &self.cgroups])
            .args(args);
        output_within(&mut c, CHILD_TIMEOUT)
    }

    /// What container `name` printed so far (stdout and stderr).
    pub fn logs(&self, name: &str) -> String {
        let mut c = self.cmd();
        c.args(["logs", name]);
        let out = output_within(&mut c, CHILD_TIMEOUT);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `podman inspect --format FORMAT TARGET`.
    pub fn inspect(&self, target: &str, format: &str) -> String {
        let mut c = self.cmd();
        c.args(["inspect", "--format", format, target]);
        String::from_utf8_lossy(&ok(&mut c, "podman inspect").stdout)
            .trim()
            .to_string()
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
        self.start_in(name, None, volumes, args)
    }

    /// [`Podman::start`] under the cgroup parent `parent` (e.g. a pod's, as the kubelet lays
    /// them out with the cgroupfs driver).
    pub fn start_in(
        &self,
        name: &str,
        parent: Option<&CgroupParent>,
        volumes: &[(&Path, &str)],
        args: &[&str],
    ) -> String {
        let mut c = self.cmd();
        c.args(["run", "-d", "--name", name]);
        c.args(["--cgroup-parent", parent.map_or(&self.cgroups, |p| &p.path)]);
        self.run_args(&mut c, volumes);
        c.args(args);
        self.names.borrow_mut().push(name.to_string());
        let out = ok(&mut c, "podman run -d");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A container `name` with the node directory `vol` at `/data`, filled until ENOSPC by a
    /// second process in it (the first holds `/data/keep` open, keeping the container and its
    /// mount namespace alive, as a job's main process would); its id.
    pub fn filled(&self, name: &str, parent: Option<&CgroupParent>, vol: &Path) -> String {
        std::fs::write(vol.join("keep"), b"").expect("keep file");
        let id = self.start_in(
            name,
            parent,
            &[(vol, "/data")],
            &["hold", "/data/keep", "open", "600"],
        );
        let out = self.exec(name, &["fill", "/data/big"]);
        assert!(
            out.contains("errno=28"),
            "the fill did not hit ENOSPC: {out}"
        );
        id
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
        remove_cgroups(&self.cgroups);
    }
}

/// Removes cgroup `rel` and everything below it (empty once its containers are gone) from
/// every hierarchy.
fn remove_cgroups(rel: &str) {
    fn below(dir: &Path) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.filter_map(Result::ok) {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    below(&e.path());
                }
            }
        }
        let _: Result<_, _> = std::fs::remove_dir(dir);
    }
    let roots = std::fs::read_dir("/sys/fs/cgroup")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    // conmon leaves its cgroup a moment after its container is removed: retry for 5 s.
    for _ in 0..50 {
        let mut left = false;
        for root in roots.iter().chain([&PathBuf::from("/sys/fs/cgroup")]) {
            let d = root.join(rel.trim_start_matches('/'));
            if d.is_dir() {
                below(&d);
                left |= d.is_dir();
            }
        }
        if !left {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!("warning: cgroup {rel} could not be removed");
}

/// A pod's cgroup (`<test parent>/pod<UID>`), made by [`Podman::pod_cgroup`]; removed with
/// the test's parent.
pub struct CgroupParent {
    pub path: String,
    pub pod_uid: String,
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

/// What the DaemonSet `variant` (`least-privilege`, `privileged`) asks of a container runtime,
/// read from the manifests by `deploy/check.py container` (never retyped here).
pub fn daemonset(variant: &str) -> serde_json::Value {
    check_py(&["container", variant])
}

/// `deploy/check.py ARGS`, whose output is JSON.
pub fn check_py(args: &[&str]) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut c = Command::new("python3");
    c.env("PYTHONPATH", root.join(".tools/py"))
        .arg(root.join("deploy/check.py"))
        .args(args);
    let out = ok(&mut c, "deploy/check.py");
    serde_json::from_slice(&out.stdout).expect("check.py prints JSON")
}

/// `podman run` options (then `image` and the manifest's args) that run the observer as the
/// DaemonSet `spec` describes it: user, capabilities, read-only root, seccomp, no new privileges,
/// the node's pid namespace, env, and every mount — hostPath volumes from the node as they are
/// (a `DirectoryOrCreate` one that does not exist here becomes a directory of the test, so the
/// machine is not changed), emptyDir volumes and the ConfigMap as directories of the test.
/// `env` is added last (the test's own overrides). Differences a test runtime forces: the
/// pod's network is the host's loopback (podman runs without a network stack here).
pub fn observer_run_args(
    podman: &Podman,
    spec: &serde_json::Value,
    image: &str,
    env: &[(&str, String)],
) -> Vec<String> {
    observer_run(podman, spec, image, env).0
}

/// [`observer_run_args`], and each mount's directory on this machine by its path inside.
pub fn observer_run(
    podman: &Podman,
    spec: &serde_json::Value,
    image: &str,
    env: &[(&str, String)],
) -> (Vec<String>, Vec<(String, PathBuf)>) {
    let mut placed = Vec::new();
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let mut a: Vec<String> = vec!["--network".into(), "host".into()];
    a.extend(
        [
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]
        .map(String::from),
    );
    if spec["host_pid"] == true {
        a.extend(["--pid".into(), "host".into()]);
    }
    if let Some(u) = spec["run_as_user"].as_u64() {
        a.extend(["--user".into(), u.to_string()]);
    }
    if spec["privileged"] == true {
        a.push("--privileged".into());
    }
    if spec["read_only_root"] == true {
        a.push("--read-only".into());
    }
    if spec["no_new_privileges"] == true {
        a.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    // RuntimeDefault and unset: the runtime's default profile.
    if spec["seccomp"] == "Unconfined" {
        a.extend(["--security-opt".into(), "seccomp=unconfined".into()]);
    }
    for c in spec["cap_drop"].as_array().into_iter().flatten() {
        a.extend(["--cap-drop".into(), s(c)]);
    }
    for c in spec["cap_add"].as_array().into_iter().flatten() {
        a.extend(["--cap-add".into(), s(c)]);
    }
    let mut envs: Vec<(String, String)> = spec["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|kv| (s(&kv[0]), s(&kv[1])))
        .collect();
    for name in spec["env_from_node"].as_array().into_iter().flatten() {
        envs.push((s(name), "fsobs-test-node".into()));
    }
    envs.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
    for (k, v) in envs {
        a.extend(["-e".into(), format!("{k}={v}")]);
    }
    for (i, m) in spec["mounts"].as_array().into_iter().flatten().enumerate() {
        let inside = s(&m["path"]);
        // An emptyDir in memory is a tmpfs of the pod's own (the kubelet's medium: Memory).
        if m["kind"] == "emptyDir" && m["medium"] == "Memory" {
            let size = match s(&m["size_limit"]).strip_suffix("Mi") {
                Some(n) => format!(",size={n}m"),
                None => String::new(),
            };
            a.extend(["--tmpfs".into(), format!("{inside}:rw,mode=1777{size}")]);
            continue;
        }
        let host = match m["kind"].as_str() {
            Some("hostPath") if Path::new(&s(&m["host"])).exists() => PathBuf::from(s(&m["host"])),
            Some("configMap") => {
                let d = podman.dir().join(format!("volume-{i}"));
                std::fs::create_dir_all(&d).expect("configmap dir");
                std::fs::write(d.join("observer.toml"), s(&spec["config"])).expect("config");
                d
            }
            Some("hostPath") if m["host_type"] != "DirectoryOrCreate" => {
                panic!("hostPath {} does not exist here", s(&m["host"]))
            }
            _ => {
                // As the kubelet makes an emptyDir: writable by any user of the pod.
                use std::os::unix::fs::PermissionsExt as _;
                let d = podman.dir().join(format!("volume-{i}"));
                std::fs::create_dir_all(&d).expect("volume dir");
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777))
                    .expect("chmod");
                d
            }
        };
        let mut opts: Vec<&str> = Vec::new();
        if m["read_only"] == true {
            opts.push("ro");
        }
        // Kubernetes' HostToContainer is a slave mount: mounts made later on the node show.
        if m["propagation"] == "HostToContainer" {
            opts.push("rslave");
        }
        let opts = if opts.is_empty() {
            String::new()
        } else {
            format!(":{}", opts.join(","))
        };
        a.extend(["-v".into(), format!("{}:{inside}{opts}", host.display())]);
        placed.push((inside, host));
    }
    a.push(image.to_string());
    a.extend(spec["args"].as_array().into_iter().flatten().map(s));
    (a, placed)
}

/// The `host:port` a containerised observer announced for `door` (`api` or `metrics`) in its
/// logs, once it has (`None` before).
pub fn announced(logs: &str, door: &str) -> Option<String> {
    logs.lines().find_map(|l| {
        let rest = l.strip_prefix("fsobserver: ")?;
        let (d, addr) = rest.split_once(" listening on ")?;
        let d = if d == "http" { "api" } else { d };
        (d == door).then(|| addr.trim().to_string())
    })
}
