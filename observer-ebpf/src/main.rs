//! Kernel programs of fsobserver (`bpfel-unknown-none`).
//!
//! Tracepoint set: one program per `syscalls/sys_exit_<name>` tracepoint. The success path is a
//! load of the return value and a compare; only failures whose errno the daemon watches build a
//! record (identity, arguments from the saved user registers, resolved path) for the ring buffer.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod args;
#[cfg(target_arch = "bpf")]
mod emit;
#[cfg(target_arch = "bpf")]
mod fexit;
#[cfg(target_arch = "bpf")]
mod kread;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod path;
#[cfg(target_arch = "bpf")]
mod programs;
#[cfg(target_arch = "bpf")]
mod prototype;
#[cfg(target_arch = "bpf")]
mod record;
#[cfg(target_arch = "bpf")]
mod refresh;
#[cfg(target_arch = "bpf")]
mod uring;

/// On the host this crate is an empty program (so workspace-wide check/clippy/test work).
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
