//! The tracepoint set: one program per `syscalls/sys_exit_<name>` tracepoint.

use aya_ebpf::{EbpfContext as _, macros::tracepoint, programs::TracePointContext};
use observer_common::syscall::*;

/// Offset of `ret` in every `syscalls/sys_exit_*` record (`struct trace_entry` + `int nr` +
/// padding). This is tracefs ABI: the daemon checks each tracepoint's `format` file against it
/// before attaching and refuses to attach if a kernel disagrees.
pub const SYS_EXIT_RET_OFFSET: usize = 16;

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

macro_rules! sys_exit_program {
    ($prog:ident, $sys:expr) => {
        #[tracepoint]
        pub fn $prog(ctx: TracePointContext) -> u32 {
            let ret = exit_ret(&ctx);
            if ret >= 0 {
                return 0;
            }
            crate::emit::on_failure($sys, ret);
            0
        }
    };
}

sys_exit_program!(fso_write, SYS_WRITE);
sys_exit_program!(fso_pwrite64, SYS_PWRITE64);
sys_exit_program!(fso_writev, SYS_WRITEV);
sys_exit_program!(fso_pwritev, SYS_PWRITEV);
sys_exit_program!(fso_pwritev2, SYS_PWRITEV2);
sys_exit_program!(fso_open, SYS_OPEN);
sys_exit_program!(fso_openat, SYS_OPENAT);
sys_exit_program!(fso_openat2, SYS_OPENAT2);
sys_exit_program!(fso_creat, SYS_CREAT);
