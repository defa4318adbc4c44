//! Maps shared by every program. Sizes are defaults; the daemon overrides them at load time.

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray, PerCpuHashMap, RingBuf},
};
use observer_common::{
    config::{COUNTER_SLOTS, ERROR_KEYS_MAX, ErrorKey, RuntimeConfig},
    event::SyscallEventBuf,
};

/// Detail records for userspace (variable length, each starting with an `EventHeader`).
#[map]
pub static OBSERVER_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Per-CPU scratch where a record is assembled (too large for the 512-byte BPF stack).
#[map]
pub static OBSERVER_SCRATCH: PerCpuArray<SyscallEventBuf> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU counters (`COUNTER_*` slots): ring drops, events, incomplete paths.
#[map]
pub static OBSERVER_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Exact failure counts per (syscall, errno), kept even when the detail record is dropped.
#[map]
pub static OBSERVER_ERRORS: PerCpuHashMap<ErrorKey, u64> =
    PerCpuHashMap::with_max_entries(ERROR_KEYS_MAX, 0);

/// Slot 0: the runtime filter, written by the daemon.
#[map]
pub static OBSERVER_CONFIG: Array<RuntimeConfig> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn bump(slot: u32) {
    if let Some(p) = OBSERVER_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, programs do not nest on one CPU for these hooks.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn count_error(syscall: u32, errno: u32) {
    let key = ErrorKey { syscall, errno };
    if let Some(p) = OBSERVER_ERRORS.get_ptr_mut(&key) {
        unsafe { *p += 1 };
        return;
    }
    if OBSERVER_ERRORS
        .insert(&key, &1, 1 /* BPF_NOEXIST */)
        .is_ok()
    {
        return;
    }
    // Another CPU may have created the key meanwhile (per-CPU values: ours is still 0).
    match OBSERVER_ERRORS.get_ptr_mut(&key) {
        Some(p) => unsafe { *p += 1 },
        None => bump(observer_common::config::COUNTER_ERROR_KEYS_FULL),
    }
}

/// Whether the daemon asked for `errno` to be reported.
#[inline(always)]
pub fn errno_watched(errno: u32) -> bool {
    match OBSERVER_CONFIG.get(0) {
        Some(cfg) => cfg.watches_errno(errno),
        None => false,
    }
}
