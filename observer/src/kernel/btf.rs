//! Kernel struct offsets from the running kernel's BTF (no CO-RE in aya: we resolve members
//! here and hand the numbers to the programs as a read-only global).

use std::path::Path;

use btf_rs::{Btf, Type};
use observer_common::offsets::KernelOffsets;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "cannot read kernel BTF at {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)"
    )]
    Read { path: String, source: anyhow::Error },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
    #[error("kernel BTF: {0}")]
    Btf(String),
    #[error("syscall argument registers are not known for this architecture ({0})")]
    Arch(&'static str),
}

/// Opens the kernel BTF (normally `/sys/kernel/btf/vmlinux`).
pub fn open(path: &Path) -> Result<Btf, BtfError> {
    Btf::from_file(path).map_err(|e| BtfError::Read {
        path: path.display().to_string(),
        source: e,
    })
}

/// Resolves every offset the programs need.
/// `THREAD_SIZE` on x86-64 without KASAN (an architecture constant, not a struct layout); the
/// saved user registers sit at its top. Only used on kernels without `bpf_task_pt_regs` (< 5.15),
/// which predate FRED's extra top-of-stack padding.
const X86_64_THREAD_SIZE: u32 = 16384;

/// Resolves every offset the programs need. `regs_from_stack`: the kernel lacks
/// `bpf_task_pt_regs`, so the programs locate the user registers from the task's stack.
pub fn kernel_offsets(btf: &Btf, regs_from_stack: bool) -> Result<KernelOffsets, BtfError> {
    let o = |s: &str, m: &str| member_offset(btf, s, m);
    let regs = syscall_arg_regs();
    let mut regs_arg = [0u32; 6];
    for (slot, reg) in regs_arg.iter_mut().zip(regs?) {
        *slot = o("pt_regs", reg)?;
    }
    Ok(KernelOffsets {
        task_files: o("task_struct", "files")?,
        task_fs: o("task_struct", "fs")?,
        files_fdt: o("files_struct", "fdt")?,
        fdtable_max_fds: o("fdtable", "max_fds")?,
        fdtable_fd: o("fdtable", "fd")?,
        file_f_path: o("file", "f_path")?,
        path_mnt: o("path", "mnt")?,
        path_dentry: o("path", "dentry")?,
        fs_pwd: o("fs_struct", "pwd")?,
        fs_root: o("fs_struct", "root")?,
        dentry_d_parent: o("dentry", "d_parent")?,
        dentry_d_name_name: o("dentry", "d_name")? + o("qstr", "name")?,
        dentry_d_inode: o("dentry", "d_inode")?,
        inode_i_ino: o("inode", "i_ino")?,
        inode_i_sb: o("inode", "i_sb")?,
        sb_s_dev: o("super_block", "s_dev")?,
        mount_mnt: o("mount", "mnt")?,
        mount_mnt_parent: o("mount", "mnt_parent")?,
        mount_mnt_mountpoint: o("mount", "mnt_mountpoint")?,
        vfsmount_mnt_root: o("vfsmount", "mnt_root")?,
        regs_arg,
        task_stack: o("task_struct", "stack")?,
        stack_regs_off: X86_64_THREAD_SIZE - struct_size(btf, "pt_regs")?,
        regs_from_stack: regs_from_stack as u32,
        regs_nr: o("pt_regs", "orig_ax")?,
        task_flags: o("task_struct", "flags")?,
        rd_old_dentry: o("renamedata", "old_dentry").unwrap_or(0),
        rd_new_dir: o("renamedata", "new_dir").unwrap_or(0),
        rd_new_dentry: o("renamedata", "new_dentry").unwrap_or(0),
        // Filled from tracefs by the probes stage (zero: no io_uring record layout known).
        iou_tp_res: 0,
        iou_tp_res_size: 0,
        iou_tp_req: 0,
        iou_req_file: o("io_kiocb", "file").unwrap_or(0),
        iou_req_opcode: o("io_kiocb", "opcode").unwrap_or(0),
        task_nsproxy: o("task_struct", "nsproxy")?,
        nsproxy_mnt_ns: o("nsproxy", "mnt_ns")?,
        mnt_ns_inum: o("mnt_namespace", "ns")? + o("ns_common", "inum")?,
        file_f_mode: o("file", "f_mode")?,
        task_exit_code: o("task_struct", "exit_code")?,
    })
}

fn find_struct(btf: &Btf, name: &str) -> Result<btf_rs::Struct, BtfError> {
    let types = btf
        .resolve_types_by_name(name)
        .map_err(|_| BtfError::NoStruct(name.into()))?;
    types
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or_else(|| BtfError::NoStruct(name.into()))
}

/// Number of parameters of kernel function `name`, if BTF describes it.
pub fn func_params(btf: &Btf, name: &str) -> Option<usize> {
    let types = btf.resolve_types_by_name(name).ok()?;
    types.into_iter().find_map(|t| match t {
        Type::Func(f) => match btf.resolve_chained_type(&f).ok()? {
            Type::FuncProto(p) => Some(p.parameters.len()),
            _ => None,
        },
        _ => None,
    })
}

/// `sizeof(struct name)`.
pub fn struct_size(btf: &Btf, name: &str) -> Result<u32, BtfError> {
    Ok(find_struct(btf, name)?.size() as u32)
}

/// `struct pt_regs` members holding syscall arguments 0..6 at syscall exit.
fn syscall_arg_regs() -> Result<[&'static str; 6], BtfError> {
    if cfg!(target_arch = "x86_64") {
        Ok(["di", "si", "dx", "r10", "r8", "r9"])
    } else {
        Err(BtfError::Arch(std::env::consts::ARCH))
    }
}

/// Byte offset of `member` in struct `strukt`, looking through anonymous struct/union members
/// (e.g. `file.f_path` and `dentry.d_name` sit in anonymous unions on recent kernels).
pub fn member_offset(btf: &Btf, strukt: &str, member: &str) -> Result<u32, BtfError> {
    let types = btf
        .resolve_types_by_name(strukt)
        .map_err(|_| BtfError::NoStruct(strukt.into()))?;
    let st = types
        .iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or_else(|| BtfError::NoStruct(strukt.into()))?;
    find_member(btf, &st.members, member, 0)?.ok_or_else(|| BtfError::NoMember {
        strukt: strukt.into(),
        member: member.into(),
    })
}

fn find_member(
    btf: &Btf,
    members: &[btf_rs::Member],
    wanted: &str,
    base_bits: u32,
) -> Result<Option<u32>, BtfError> {
    for m in members {
        let name = btf.resolve_name(m).unwrap_or_default();
        let bits = base_bits + m.bit_offset();
        if name == wanted {
            if !bits.is_multiple_of(8) {
                return Err(BtfError::Btf(format!("member {wanted} is a bitfield")));
            }
            return Ok(Some(bits / 8));
        }
        if name.is_empty() {
            let inner = match btf.resolve_chained_type(m) {
                Ok(Type::Struct(s)) | Ok(Type::Union(s)) => s.members,
                _ => continue,
            };
            if let Some(off) = find_member(btf, &inner, wanted, bits)? {
                return Ok(Some(off));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the running kernel's BTF (the observer needs it: a machine without it cannot run
    /// these tests); the offsets must be plausible and distinct where the layout requires it.
    #[test]
    fn resolves_offsets_from_running_kernel() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        let btf =
            open(path).expect("kernel BTF at /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF)");
        let o = kernel_offsets(&btf, false).expect("offsets");
        assert_eq!(o.regs_from_stack, 0);
        assert_eq!(
            o.stack_regs_off,
            16384 - struct_size(&btf, "pt_regs").unwrap()
        );
        assert_eq!(struct_size(&btf, "pt_regs").unwrap(), 168, "x86-64 pt_regs");
        assert_ne!(o.task_files, o.task_fs);
        assert_eq!(o.path_mnt, 0, "struct path starts with mnt");
        assert_eq!(o.path_dentry, 8);
        assert!(o.dentry_d_name_name >= 8, "qstr.name follows hash_len");
        assert_eq!(o.regs_arg[0], member_offset(&btf, "pt_regs", "di").unwrap());
        assert!(matches!(
            member_offset(&btf, "dentry", "no_such_member"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            member_offset(&btf, "no_such_struct_xyz", "a"),
            Err(BtfError::NoStruct(_))
        ));
    }
}
