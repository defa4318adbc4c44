//! Filesystems mounted for one test and always unmounted: tmpfs, bind mounts, a btrfs with a
//! qgroup limit.

use std::path::{Path, PathBuf};

use std::process::Command;

use crate::{CHILD_TIMEOUT, output_within, require_root};

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
