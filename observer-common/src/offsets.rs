//! Kernel struct member offsets, read from the running kernel's BTF by the daemon and written
//! into the programs' read-only global `OBSERVER_OFFSETS` before load. No offset is compiled in.

/// Byte offsets of the kernel members the programs read. `u32::MAX` never appears: the daemon
/// refuses to load when a member is missing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KernelOffsets {
    /// `task_struct.files` (`struct files_struct *`).
    pub task_files: u32,
    /// `task_struct.fs` (`struct fs_struct *`).
    pub task_fs: u32,
    /// `files_struct.fdt` (`struct fdtable *`).
    pub files_fdt: u32,
    /// `fdtable.max_fds` (`unsigned int`).
    pub fdtable_max_fds: u32,
    /// `fdtable.fd` (`struct file **`).
    pub fdtable_fd: u32,
    /// `file.f_path` (`struct path`).
    pub file_f_path: u32,
    /// `path.mnt` (`struct vfsmount *`).
    pub path_mnt: u32,
    /// `path.dentry` (`struct dentry *`).
    pub path_dentry: u32,
    /// `fs_struct.pwd` (`struct path`).
    pub fs_pwd: u32,
    /// `fs_struct.root` (`struct path`).
    pub fs_root: u32,
    /// `dentry.d_parent` (`struct dentry *`).
    pub dentry_d_parent: u32,
    /// `dentry.d_name.name` (`const unsigned char *`), qstr offset included.
    pub dentry_d_name_name: u32,
    /// `dentry.d_inode` (`struct inode *`).
    pub dentry_d_inode: u32,
    /// `inode.i_ino` (`unsigned long`).
    pub inode_i_ino: u32,
    /// `inode.i_sb` (`struct super_block *`).
    pub inode_i_sb: u32,
    /// `super_block.s_dev` (`dev_t`).
    pub sb_s_dev: u32,
    /// `mount.mnt` (the embedded `struct vfsmount`).
    pub mount_mnt: u32,
    /// `mount.mnt_parent` (`struct mount *`).
    pub mount_mnt_parent: u32,
    /// `mount.mnt_mountpoint` (`struct dentry *`).
    pub mount_mnt_mountpoint: u32,
    /// `vfsmount.mnt_root` (`struct dentry *`).
    pub vfsmount_mnt_root: u32,
    /// Offsets in `struct pt_regs` of syscall arguments 0..6 as the syscall entry saved them
    /// (x86-64: di, si, dx, r10, r8, r9).
    pub regs_arg: [u32; 6],
    /// `task_struct.stack` (`void *`, base of the kernel stack).
    pub task_stack: u32,
    /// Offset of the saved user `struct pt_regs` from the stack base (THREAD_SIZE minus top
    /// padding minus `sizeof(struct pt_regs)`); used only with `regs_from_stack`.
    pub stack_regs_off: u32,
    /// Non-zero: find the user registers at `task->stack + stack_regs_off` because the kernel
    /// lacks `bpf_task_pt_regs` (before 5.15). Zero: use the helper.
    pub regs_from_stack: u32,
    /// Offset in `struct pt_regs` of the syscall number (x86-64: `orig_ax`).
    pub regs_nr: u32,
    /// `task_struct.flags` (`PF_KTHREAD` marks kernel threads).
    pub task_flags: u32,
    /// `struct renamedata` members (5.12+; zero on kernels where vfs_rename takes 6 arguments).
    pub rd_old_dentry: u32,
    pub rd_new_dir: u32,
    pub rd_new_dentry: u32,
    /// `io_uring/io_uring_complete` record layout, from its tracefs `format` (it changed across
    /// kernels: 5.10 has `long res` and no `req`; 5.19+ has `void *req` and `int res`): offset
    /// and size (4 or 8) of `res`, and offset of `req` (0 = the kernel's record has none).
    pub iou_tp_res: u32,
    pub iou_tp_res_size: u32,
    pub iou_tp_req: u32,
    /// `io_kiocb.file` (`struct file *`) and `io_kiocb.opcode` (`u8`), from BTF.
    pub iou_req_file: u32,
    pub iou_req_opcode: u32,
    /// `task_struct.nsproxy`, `nsproxy.mnt_ns`, and the inode number of a mount namespace
    /// (`mnt_namespace.ns` + `ns_common.inum`): the caller's mount namespace in every record.
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    pub mnt_ns_inum: u32,
    /// `file.f_mode` (`FMODE_CREATED`: the open created the file).
    pub file_f_mode: u32,
    /// `task_struct.exit_code` (low 7 bits: the signal that killed it).
    pub task_exit_code: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layout_is_stable() {
        assert_eq!(offset_of!(KernelOffsets, task_files), 0);
        assert_eq!(offset_of!(KernelOffsets, vfsmount_mnt_root), 76);
        assert_eq!(offset_of!(KernelOffsets, regs_arg), 80);
        assert_eq!(offset_of!(KernelOffsets, task_stack), 104);
        assert_eq!(offset_of!(KernelOffsets, stack_regs_off), 108);
        assert_eq!(offset_of!(KernelOffsets, regs_from_stack), 112);
        assert_eq!(offset_of!(KernelOffsets, regs_nr), 116);
        assert_eq!(offset_of!(KernelOffsets, task_flags), 120);
        assert_eq!(offset_of!(KernelOffsets, rd_new_dentry), 132);
        assert_eq!(offset_of!(KernelOffsets, iou_tp_res), 136);
        assert_eq!(offset_of!(KernelOffsets, iou_req_opcode), 152);
        assert_eq!(offset_of!(KernelOffsets, mnt_ns_inum), 164);
        assert_eq!(offset_of!(KernelOffsets, file_f_mode), 168);
        assert_eq!(offset_of!(KernelOffsets, task_exit_code), 172);
        assert_eq!(size_of::<KernelOffsets>(), 176);
    }
}
