//! Bench-only programs, never loaded by the daemon: the lower bounds `cargo xtask bench` measures
//! the tracepoint set against (issue #19's dispatcher question).
//!
//! - `fso_bench_empty`: a program that returns at once, attached to every `sys_exit_*` tracepoint
//!   the observer uses: what the perf-tracepoint dispatch of a watched call costs by itself.
//! - `fso_bench_dispatch`: one raw `sys_exit` program for every syscall that reads the syscall's
//!   number and tests it against the watched set, then returns: the least a single dispatcher
//!   pays, on every syscall, before doing any of the observer's work.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};

/// `struct pt_regs.orig_ax` on x86_64 (the syscall number at `sys_exit`).
const PT_REGS_ORIG_AX: u64 = 15 * 8;

/// The observer's `sys_exit_*` syscalls by x86_64 number (the same list as `programs.rs`).
const WATCHED_NR: [u64; 37] = [
    1, 18, 20, 296, 328, 2, 257, 437, 85, 285, 77, 76, 83, 258, 133, 259, 86, 265, 88, 266, 74, 75,
    277, 3, 326, 40, 275, 87, 263, 84, 82, 264, 316, 280, 235, 132, 261,
];

const fn bitmap() -> [u64; 8] {
    let mut m = [0u64; 8];
    let mut i = 0;
    while i < WATCHED_NR.len() {
        let nr = WATCHED_NR[i];
        m[(nr / 64) as usize] |= 1 << (nr % 64);
        i += 1;
    }
    m
}

static WATCHED: [u64; 8] = bitmap();

/// Incremented on a watched call so the test cannot be optimised away.
#[unsafe(no_mangle)]
static mut FSO_BENCH_WATCHED: u64 = 0;

#[tracepoint]
pub fn fso_bench_empty(_ctx: TracePointContext) -> u32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn fso_bench_dispatch(ctx: RawTracePointContext) -> i32 {
    let regs: u64 = ctx.arg(0);
    let Ok(nr) = (unsafe { bpf_probe_read_kernel((regs + PT_REGS_ORIG_AX) as *const u64) }) else {
        return 0;
    };
    if nr < 512 && WATCHED[(nr / 64) as usize & 7] & (1 << (nr % 64)) != 0 {
        // SAFETY: a plain per-object counter; races only lose counts, which nothing reads.
        unsafe {
            let p = &raw mut FSO_BENCH_WATCHED;
            core::ptr::write_volatile(p, core::ptr::read_volatile(p).wrapping_add(1));
        }
    }
    0
}
