//! Path reconstruction in the kernel: walk a `struct path` (dentry + vfsmount) up to the root of
//! its mount namespace, crossing mount points, writing components leaf first into the record's
//! path area. Userspace reverses them (see `observer_common::event::PathInfo`).

use aya_ebpf::helpers::generated::{bpf_probe_read_kernel_str, bpf_probe_read_user_str};
use observer_common::event::{
    PATH_COMPONENT_AREA, PATH_FS_RELATIVE, PATH_INCOMPLETE, PATH_MAX_DEPTH, PATH_NAME_MAX,
    PATH_REACHED_ROOT, PATH_TAIL_MAX, PATH_TRUNCATED, PATH_WALKED, PathInfo,
};

use crate::kread::{off, ptr_at};

const AREA_MASK: u32 = PATH_COMPONENT_AREA as u32 - 1;

/// The component-area length so far, read from the record (volatile) and masked. Keeping the
/// running length in map memory instead of a register matters twice: LLVM cannot prove its range
/// and drop the mask the verifier needs to bound the write, and the verifier does not carry a
/// distinct precise length per path, so loop states prune instead of exploding.
#[inline(always)]
fn used_len(info: &PathInfo) -> usize {
    // SAFETY: reading a field of a value we own.
    (unsafe { core::ptr::read_volatile(&raw const info.len) } as u32 & AREA_MASK) as usize
}

/// Walks from `dentry` in mount `vfsmnt` to the namespace root, appending components to
/// `area` (the record's path bytes) and updating `info` (`len`, `ncomp`, `flags`).
#[inline(always)]
pub fn walk(area: *mut u8, vfsmnt: u64, dentry: u64, info: &mut PathInfo) {
    info.flags |= PATH_WALKED;
    info.len = 0;
    info.ncomp = 0;
    let mount_mnt = off!(mount_mnt);
    let mut mnt = vfsmnt.wrapping_sub(mount_mnt); // container_of(vfsmnt, struct mount, mnt)
    let mut dentry = dentry;
    // No mount (fexit on a dentry-only VFS function): walk to the filesystem root.
    let fs_relative = vfsmnt == 0;
    let mut mnt_root = if fs_relative {
        info.flags |= PATH_FS_RELATIVE;
        0
    } else {
        match ptr_at(vfsmnt, off!(vfsmount_mnt_root)) {
            Some(r) => r,
            None => {
                info.flags |= PATH_INCOMPLETE;
                return;
            }
        }
    };
    let mut end = PATH_TRUNCATED;
    for _ in 0..PATH_MAX_DEPTH {
        if !fs_relative && dentry == mnt_root {
            // Root of this mount: continue from the mount point in the parent mount.
            let parent = ptr_at(mnt, off!(mount_mnt_parent)).unwrap_or(0);
            if parent == mnt {
                end = PATH_REACHED_ROOT;
                break;
            }
            dentry = ptr_at(mnt, off!(mount_mnt_mountpoint)).unwrap_or(0);
            mnt_root = ptr_at(parent, mount_mnt + off!(vfsmount_mnt_root)).unwrap_or(0);
            mnt = parent;
            if parent == 0 || dentry == 0 {
                end = PATH_INCOMPLETE;
                break;
            }
            continue;
        }
        let parent = ptr_at(dentry, off!(dentry_d_parent)).unwrap_or(0);
        if parent == dentry {
            // Root of a filesystem that is not a mount root here (detached or internal mount).
            end = PATH_REACHED_ROOT;
            break;
        }
        let name = ptr_at(dentry, off!(dentry_d_name_name)).unwrap_or(0);
        let at = used_len(info);
        // SAFETY: `at` < PATH_COMPONENT_AREA, so `at` + PATH_NAME_MAX stays inside the buffer.
        let n = unsafe {
            bpf_probe_read_kernel_str(area.add(at).cast(), PATH_NAME_MAX as u32, name as *const _)
        };
        if parent == 0 || n <= 0 {
            end = PATH_INCOMPLETE;
            break;
        }
        // Keep the length below the area size so the tail mask is the identity.
        let next = at + n as usize;
        if next >= PATH_COMPONENT_AREA {
            break;
        }
        info.len = next as u16;
        info.ncomp += 1;
        dentry = parent;
    }
    info.flags |= end;
}

/// Appends the user string at `uptr` after the components as the record's tail.
#[inline(always)]
pub fn append_user_tail(area: *mut u8, uptr: u64, info: &mut PathInfo) {
    let at = used_len(info);
    // SAFETY: `at` + PATH_TAIL_MAX stays inside the path buffer.
    let n = unsafe {
        bpf_probe_read_user_str(area.add(at).cast(), PATH_TAIL_MAX as u32, uptr as *const _)
    };
    if n <= 0 {
        info.flags |= PATH_INCOMPLETE;
        return;
    }
    info.flags |= observer_common::event::PATH_HAS_TAIL;
    info.tail_off = at as u16;
    info.len = (at as u32 + n as u32) as u16;
}
