//! Wire types shared by the kernel programs (`observer-ebpf`) and the daemon (`observer`).
//!
//! Rules (checked by the layout tests at the bottom of each module):
//! `#[repr(C)]`, explicit `_pad` fields, no `bool`/enum/`Option`/references, a fixed
//! [`event::EventHeader`] at offset 0 of every ring-buffer record so a decoder can dispatch on
//! `kind` before it knows the body.
#![no_std]

pub mod config;
pub mod event;
pub mod names;
pub mod offsets;
pub mod syscall;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type below is `#[repr(C)]`, `Copy`, has explicit padding and only integer or
    // integer-array fields, so any bit pattern is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for crate::offsets::KernelOffsets {}
    unsafe impl aya::Pod for crate::config::ProcName {}
    unsafe impl aya::Pod for crate::config::RuntimeConfig {}
    unsafe impl aya::Pod for crate::config::ErrorKey {}
    unsafe impl aya::Pod for crate::config::EntryCounts {}
    unsafe impl aya::Pod for crate::config::DirKey {}
    unsafe impl aya::Pod for crate::config::DeletePending {}
}
