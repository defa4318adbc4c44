//! A cgroup v2 id (what the kernel puts in every record) back to its path, for processes that
//! exited before `/proc/PID/cgroup` could be read: the id is the cgroup directory's kernfs node
//! id, which `open_by_handle_at` on the cgroup2 mount accepts as a file handle.

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

/// `FILEID_KERNFS`: the handle type of kernfs (cgroupfs) file handles.
const FILEID_KERNFS: i32 = 0xfe;

/// Where the cgroup2 hierarchy is mounted in the mount namespace of `/proc` directory `proc`
/// (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` in hybrid mode).
fn cgroup2_mount(proc: &str) -> Option<String> {
    let text = crate::node::mounts::read_mountinfo(
        &format!("{proc}/mountinfo"),
        crate::node::mounts::MAX_MOUNTINFO_BYTES,
    )?;
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        right
            .starts_with("cgroup2 ")
            .then(|| left.split(' ').nth(4).map(str::to_string))?
    })
}

/// Opens the cgroup2 root once; `None` when there is none (or no CAP_DAC_READ_SEARCH later).
pub struct CgroupResolver {
    root: Option<(OwnedFd, String)>,
}

impl CgroupResolver {
    /// Opens the node's hierarchy (through its process's root: a container's own cgroup
    /// namespace would hide the others), else this process's.
    pub fn open() -> Self {
        let node = crate::node::mounts::node_proc();
        let root = [node, "/proc/self"].into_iter().find_map(|proc| {
            let m = cgroup2_mount(proc)?;
            let c = CString::new(format!("{proc}/root{m}")).ok()?;
            // SAFETY: a valid C string; the fd is owned below.
            let fd = unsafe {
                libc::open(
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            // SAFETY: a fresh fd we own.
            (fd >= 0).then(|| (unsafe { OwnedFd::from_raw_fd(fd) }, m))
        });
        Self { root }
    }

    /// The cgroup path (as `/proc/PID/cgroup` shows it, from the hierarchy's root) of cgroup `id`.
    pub fn path_of(&self, id: u64) -> Option<String> {
        let (root, mount) = self.root.as_ref()?;
        #[repr(C)]
        struct Handle {
            bytes: u32,
            kind: i32,
            id: u64,
        }
        let mut h = Handle {
            bytes: 8,
            kind: FILEID_KERNFS,
            id,
        };
        // SAFETY: `h` is a file_handle with 8 bytes of handle data; the fd is owned below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                root.as_raw_fd(),
                &raw mut h,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        let rel = path.to_str()?.strip_prefix(mount.as_str())?;
        Some(if rel.is_empty() {
            "/".into()
        } else {
            rel.into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cgroup_id_resolves_to_own_cgroup_path() {
        use std::os::unix::fs::MetadataExt as _;
        let r = CgroupResolver::open();
        let Some((_, mount)) = &r.root else {
            panic!("no cgroup2 mount here");
        };
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let id = std::fs::metadata(format!("{mount}{own}")).unwrap().ino();
        assert_eq!(r.path_of(id).as_deref(), Some(own));
        assert_eq!(r.path_of(u64::MAX), None);
    }
}
