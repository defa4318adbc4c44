//! Kernel memory reads at `base + offset`, offsets coming from `OBSERVER_OFFSETS` (BTF).

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated::bpf_get_current_task_btf};
use observer_common::offsets::KernelOffsets;

/// Filled by the daemon from the running kernel's BTF before load (read-only after load, so the
/// verifier sees each offset as a constant).
#[unsafe(no_mangle)]
pub static OBSERVER_OFFSETS: KernelOffsets = KernelOffsets {
    task_files: 0,
    task_fs: 0,
    files_fdt: 0,
    fdtable_max_fds: 0,
    fdtable_fd: 0,
    file_f_path: 0,
    path_mnt: 0,
    path_dentry: 0,
    fs_pwd: 0,
    fs_root: 0,
    dentry_d_parent: 0,
    dentry_d_name_name: 0,
    dentry_d_inode: 0,
    inode_i_ino: 0,
    inode_i_sb: 0,
    sb_s_dev: 0,
    mount_mnt: 0,
    mount_mnt_parent: 0,
    mount_mnt_mountpoint: 0,
    vfsmount_mnt_root: 0,
    regs_arg: [0; 6],
    task_stack: 0,
    stack_regs_off: 0,
    regs_from_stack: 0,
    regs_nr: 0,
    task_flags: 0,
    rd_old_dentry: 0,
    rd_new_dir: 0,
    rd_new_dentry: 0,
    iou_tp_res: 0,
    iou_tp_res_size: 0,
    iou_tp_req: 0,
    iou_req_file: 0,
    iou_req_opcode: 0,
    task_nsproxy: 0,
    nsproxy_mnt_ns: 0,
    mnt_ns_inum: 0,
    file_f_mode: 0,
    task_exit_code: 0,
};

/// One offset, read so the compiler cannot fold the zero initialiser.
macro_rules! off {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const $crate::kread::OBSERVER_OFFSETS.$field) } as u64
    };
    ($field:ident[$i:expr]) => {
        unsafe { core::ptr::read_volatile(&raw const $crate::kread::OBSERVER_OFFSETS.$field[$i]) }
            as u64
    };
}
pub(crate) use off;

/// Reads a kernel pointer-sized value at `base + off`.
#[inline(always)]
pub fn ptr_at(base: u64, off: u64) -> Option<u64> {
    if base == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off) as *const u64) }.ok()
}

#[inline(always)]
pub fn u32_at(base: u64, off: u64) -> Option<u32> {
    if base == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off) as *const u32) }.ok()
}

/// The u64 member at `off` of a typed (BTF) kernel pointer: a plain load, which the verifier
/// checks against the member's type and the kernel guards against faults (reads 0).
#[inline(always)]
pub fn btf_word(base: u64, off: u64) -> u64 {
    // SAFETY: see above; `base` must come from a BTF-typed helper result or member load.
    unsafe { core::ptr::read_volatile(base.wrapping_add(off) as *const u64) }
}

/// The `struct file *` behind `fd` in `task`'s fd table.
#[inline(always)]
pub fn fd_file(task: u64, fd: i64) -> Option<u64> {
    if fd < 0 {
        return None;
    }
    let (max, arr) = if off!(regs_from_stack) == 0 {
        // 5.15+: the current task as a typed (BTF) pointer, so the walk to the fd array is
        // plain loads the kernel guards instead of probe reads (`task` is the current task).
        let t = unsafe { bpf_get_current_task_btf() } as u64;
        let files = btf_word(t, off!(task_files));
        if files == 0 {
            return None;
        }
        let fdt = btf_word(files, off!(files_fdt));
        if fdt == 0 {
            return None;
        }
        let max_at = fdt.wrapping_add(off!(fdtable_max_fds));
        // SAFETY: `fdt` is a typed `struct fdtable *`; `max_fds` is its u32 member.
        let max = unsafe { core::ptr::read_volatile(max_at as *const u32) };
        (max as i64, btf_word(fdt, off!(fdtable_fd)))
    } else {
        let files = ptr_at(task, off!(task_files))?;
        let fdt = ptr_at(files, off!(files_fdt))?;
        (
            u32_at(fdt, off!(fdtable_max_fds))? as i64,
            ptr_at(fdt, off!(fdtable_fd))?,
        )
    };
    if fd >= max {
        return None;
    }
    let file = ptr_at(arr, (fd as u64) * 8)?;
    if file == 0 { None } else { Some(file) }
}

/// Two pointer-sized members of one struct at `base + a` and `base + b`: one probe read when
/// both lie in the same 32 bytes (each read costs ~30 ns, most of a member's price), two
/// otherwise. The offsets are load-time constants, so the verifier sees fixed stack slots.
#[inline(always)]
pub fn pair_at(base: u64, a: u64, b: u64) -> Option<(u64, u64)> {
    if base == 0 {
        return None;
    }
    let lo = if a < b { a } else { b };
    let (da, db) = (a - lo, b - lo);
    if da % 8 == 0 && db % 8 == 0 && da < 32 && db < 32 {
        let w = unsafe { bpf_probe_read_kernel(base.wrapping_add(lo) as *const [u64; 4]) }.ok()?;
        Some((w[(da / 8) as usize & 3], w[(db / 8) as usize & 3]))
    } else {
        Some((ptr_at(base, a)?, ptr_at(base, b)?))
    }
}

/// `(vfsmount, dentry)` of the `struct path` at `base + path_off`.
#[inline(always)]
pub fn path_at(base: u64, path_off: u64) -> Option<(u64, u64)> {
    let (mnt, dentry) = pair_at(
        base,
        path_off + off!(path_mnt),
        path_off + off!(path_dentry),
    )?;
    if mnt == 0 || dentry == 0 {
        None
    } else {
        Some((mnt, dentry))
    }
}

/// `(inode number, s_dev)` of a dentry's inode; zeros when it has none (negative dentry).
#[inline(always)]
pub fn dentry_ino_dev(dentry: u64) -> (u64, u32) {
    let Some(inode) = ptr_at(dentry, off!(dentry_d_inode)) else {
        return (0, 0);
    };
    if inode == 0 {
        return (0, 0);
    }
    let Some((ino, sb)) = pair_at(inode, off!(inode_i_ino), off!(inode_i_sb)) else {
        return (0, 0);
    };
    (ino, u32_at(sb, off!(sb_s_dev)).unwrap_or(0))
}
