//! The tracepoint set: one program per `syscalls/sys_exit_<name>` tracepoint, each an
//! instantiation of [`crate::emit::on_exit`] for its syscall.

use aya_ebpf::{EbpfContext as _, macros::tracepoint, programs::TracePointContext};
use observer_common::{names::SYS_EXIT_RET_OFFSET, syscall::*};

#[inline(always)]
fn exit_ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: the ctx of a sys_exit tracepoint is at least 24 bytes (checked by the verifier).
    unsafe {
        *(ctx
            .as_ptr()
            .cast::<u8>()
            .add(SYS_EXIT_RET_OFFSET)
            .cast::<i64>())
    }
}

macro_rules! sys_exit_programs {
    ($($prog:ident => $id:ident),* $(,)?) => {$(
        #[tracepoint]
        pub fn $prog(ctx: TracePointContext) -> u32 {
            crate::emit::on_exit::<$id, _>(&ctx, exit_ret(&ctx));
            0
        }
    )*};
}

/// The naming program: loaded (with growth) and tail-called, never attached (see
/// `OBSERVER_TAIL`).
#[tracepoint]
pub fn fso_name_dir(_ctx: TracePointContext) -> u32 {
    let _: Option<()> = crate::emit::name_requested();
    0
}

sys_exit_programs! {
    fso_write => SYS_WRITE,
    fso_pwrite64 => SYS_PWRITE64,
    fso_writev => SYS_WRITEV,
    fso_pwritev => SYS_PWRITEV,
    fso_pwritev2 => SYS_PWRITEV2,
    fso_open => SYS_OPEN,
    fso_openat => SYS_OPENAT,
    fso_openat2 => SYS_OPENAT2,
    fso_creat => SYS_CREAT,
    fso_fallocate => SYS_FALLOCATE,
    fso_ftruncate => SYS_FTRUNCATE,
    fso_truncate => SYS_TRUNCATE,
    fso_mkdir => SYS_MKDIR,
    fso_mkdirat => SYS_MKDIRAT,
    fso_mknod => SYS_MKNOD,
    fso_mknodat => SYS_MKNODAT,
    fso_link => SYS_LINK,
    fso_linkat => SYS_LINKAT,
    fso_symlink => SYS_SYMLINK,
    fso_symlinkat => SYS_SYMLINKAT,
    fso_fsync => SYS_FSYNC,
    fso_fdatasync => SYS_FDATASYNC,
    fso_sync_file_range => SYS_SYNC_FILE_RANGE,
    fso_close => SYS_CLOSE,
    fso_copy_file_range => SYS_COPY_FILE_RANGE,
    fso_sendfile64 => SYS_SENDFILE64,
    fso_splice => SYS_SPLICE,
    fso_unlink => SYS_UNLINK,
    fso_unlinkat => SYS_UNLINKAT,
    fso_rmdir => SYS_RMDIR,
    fso_rename => SYS_RENAME,
    fso_renameat => SYS_RENAMEAT,
    fso_renameat2 => SYS_RENAMEAT2,
    fso_utimensat => SYS_UTIMENSAT,
    fso_utimes => SYS_UTIMES,
    fso_utime => SYS_UTIME,
    fso_futimesat => SYS_FUTIMESAT,
}

/// A process the entry counters know, killed by a signal (SIGKILL, the OOM killer, a crash):
/// remembered with the signal, so what it left behind is known as a dead process's orphans.
#[tracepoint]
pub fn fso_process_exit(_ctx: TracePointContext) -> u32 {
    let _: Option<()> = crate::maps::note_killed();
    0
}

/// Failed io_uring completions (optional: kernels without io_uring lack the tracepoint).
#[tracepoint]
pub fn fso_io_uring_complete(ctx: TracePointContext) -> u32 {
    let _: Option<()> = crate::uring::on_complete(&ctx);
    0
}
