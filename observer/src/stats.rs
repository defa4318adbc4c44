//! Transport and in-kernel counters: kernel ring drops per CPU, userspace queue drops, exact
//! per-(syscall, errno) failure counts.

use std::sync::atomic::Ordering;

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use observer_common::config::{
    COUNTER_ERROR_KEYS_FULL, COUNTER_EVENTS, COUNTER_PATH_INCOMPLETE, COUNTER_RING_DROPS, ErrorKey,
};
use serde::Serialize;

use crate::reader::ReaderStats;

/// A snapshot, serialised as the `{"type":"stats",...}` line.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Records the kernel could not reserve in the ring (sum over CPUs).
    pub kernel_ring_drops: u64,
    /// The same, per CPU (index = CPU).
    pub kernel_ring_drops_per_cpu: Vec<u64>,
    /// Records the kernel wrote.
    pub kernel_events: u64,
    pub kernel_path_incomplete: u64,
    pub kernel_error_keys_full: u64,
    /// Records the reader took from the ring.
    pub userspace_received: u64,
    /// Records dropped because the userspace queue was full.
    pub userspace_queue_drops: u64,
    /// Records that failed to decode.
    pub decode_errors: u64,
    /// Exact failure counts (kernel maps), sorted by syscall then errno.
    pub errors: Vec<ErrorCount>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ErrorCount {
    pub syscall: &'static str,
    pub errno: u32,
    pub errno_name: String,
    pub count: u64,
}

/// Reads the kernel maps; holds them for the daemon's lifetime.
pub struct KernelCounters {
    counters: PerCpuArray<MapData, u64>,
    errors: PerCpuHashMap<MapData, ErrorKey, u64>,
}

impl KernelCounters {
    pub fn new(
        counters: PerCpuArray<MapData, u64>,
        errors: PerCpuHashMap<MapData, ErrorKey, u64>,
    ) -> Self {
        Self { counters, errors }
    }

    fn per_cpu(&self, slot: u32) -> Vec<u64> {
        self.counters
            .get(&slot, 0)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn snapshot(&self, reader: &ReaderStats, decode_errors: u64) -> StatsSnapshot {
        let drops = self.per_cpu(COUNTER_RING_DROPS);
        let sum = |slot| self.per_cpu(slot).iter().sum::<u64>();
        let mut errors: Vec<ErrorCount> = self
            .errors
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| ErrorCount {
                syscall: observer_common::syscall::name(k.syscall),
                errno: k.errno,
                errno_name: crate::errno::name(k.errno),
                count: v.iter().sum(),
            })
            .collect();
        errors.sort_by(|a, b| (a.syscall, a.errno).cmp(&(b.syscall, b.errno)));
        StatsSnapshot {
            kernel_ring_drops: drops.iter().sum(),
            kernel_ring_drops_per_cpu: drops,
            kernel_events: sum(COUNTER_EVENTS),
            kernel_path_incomplete: sum(COUNTER_PATH_INCOMPLETE),
            kernel_error_keys_full: sum(COUNTER_ERROR_KEYS_FULL),
            userspace_received: reader.received.load(Ordering::Relaxed),
            userspace_queue_drops: reader.queue_drops.load(Ordering::Relaxed),
            decode_errors,
            errors,
        }
    }
}
