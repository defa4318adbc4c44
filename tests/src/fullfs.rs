//! A filesystem whose metadata updates fail with ENOSPC on demand, as a full disk's do on
//! filesystems that need space for them (a FUSE passthrough over a real directory, Debian's
//! fusepy): tmpfs never fails `utimes` when full, so the lock tests need this to make a
//! heartbeat fail with ENOSPC for real.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The mounted filesystem (unmounted, daemon stopped, on drop).
pub struct FullFs {
    pub dir: PathBuf,
    switch: PathBuf,
    daemon: Option<Child>,
    _base: tempfile::TempDir,
}

const FS: &str = r#"
import errno, os, sys
import fusepy as fuse
mnt, root, switch = sys.argv[1], sys.argv[2], sys.argv[3]
ATTRS = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime", "st_mtime", "st_ctime")
class FS(fuse.Operations):
    def _p(self, path):
        return root + path
    def getattr(self, path, fh=None):
        st = os.lstat(self._p(path))
        return {k: getattr(st, k) for k in ATTRS}
    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._p(path))
    def mkdir(self, path, mode):
        os.mkdir(self._p(path), mode)
    def rmdir(self, path):
        os.rmdir(self._p(path))
    def chmod(self, path, mode):
        os.chmod(self._p(path), mode)
    def utimens(self, path, times=None):
        if os.path.exists(switch):
            raise fuse.FuseOSError(errno.ENOSPC)
        os.utime(self._p(path), times=times)
    def statfs(self, path):
        st = os.statvfs(self._p(path))
        return {k: getattr(st, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree",
                "f_bavail", "f_files", "f_ffree", "f_favail", "f_namemax")}
fuse.FUSE(FS(), mnt, foreground=True, allow_other=True)
"#;

impl FullFs {
    /// Mounts it (not yet full) at a fresh directory, with a world-writable `jobs` directory.
    pub fn mount() -> FullFs {
        crate::require_root();
        let base = tempfile::Builder::new()
            .prefix("fsobs-test-fullfs-")
            .tempdir()
            .unwrap();
        let (dir, backing) = (base.path().join("mnt"), base.path().join("backing"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::create_dir_all(backing.join("jobs")).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        for (p, mode) in [(base.path(), 0o755), (&backing.join("jobs"), 0o777)] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let switch = base.path().join("full");
        let daemon = fuse_daemon(base.path(), FS, &[&dir, &backing, &switch]);
        FullFs {
            dir,
            switch,
            daemon: Some(daemon),
            _base: base,
        }
    }

    /// From now on, every `utimes` on it fails with ENOSPC.
    pub fn fill(&self) {
        std::fs::write(&self.switch, b"").unwrap();
    }
}

/// Starts a fusepy filesystem (`source`, a Python script written into `base`) with `args`, the
/// first of which is its mount point, and waits until it is mounted.
pub(crate) fn fuse_daemon(base: &Path, source: &str, args: &[&Path]) -> Child {
    let script = base.join("fs.py");
    std::fs::write(&script, source).unwrap();
    let daemon = Command::new("/usr/bin/python3")
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with fusepy (the test command installs python3-fusepy and fuse3)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !crate::is_mounted(args[0]) {
        assert!(
            Instant::now() < deadline,
            "the FUSE filesystem never mounted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon
}

impl Drop for FullFs {
    fn drop(&mut self) {
        let _: Result<_, _> = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
        if let Some(mut d) = self.daemon.take() {
            let _: Result<_, _> = d.kill();
            let _: Result<_, _> = d.wait();
        }
    }
}
