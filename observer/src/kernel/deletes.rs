//! The exact deletion counts: the three LRU maps (per process, per directory, per filesystem)
//! plus each CPU's pending slot, where the programs coalesce repeated keys before moving them
//! into the maps. A read adds a CPU's slot only when no move ran on that CPU during the read
//! (its `seq` was even and unchanged), so nothing is counted twice or missed.

use std::collections::HashMap;

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use observer_common::config::{
    DeletePending, DirKey, EntryCounts, PENDING_DIR, PENDING_MOUNT, PENDING_PROC,
};

/// Reads before an inconsistent result is taken anyway (a move on every try: a busy `rm -rf`
/// changing directories faster than the maps can be read).
const TRIES: usize = 3;

pub struct DeleteMaps {
    pub by_proc: PerCpuHashMap<MapData, u32, EntryCounts>,
    pub by_dir: PerCpuHashMap<MapData, DirKey, EntryCounts>,
    pub by_mount: PerCpuHashMap<MapData, u32, EntryCounts>,
    pub pending: PerCpuArray<MapData, DeletePending>,
}

/// Counts summed over CPUs, pending slots included.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeleteTotals {
    pub by_proc: HashMap<u32, EntryCounts>,
    pub by_dir: HashMap<DirKey, EntryCounts>,
    pub by_mount: HashMap<u32, EntryCounts>,
}

fn sum<K: std::hash::Hash + Eq + Copy + aya::Pod>(
    map: &PerCpuHashMap<MapData, K, EntryCounts>,
) -> HashMap<K, EntryCounts> {
    let mut out: HashMap<K, EntryCounts> = HashMap::new();
    for (k, per_cpu) in map.iter().filter_map(Result::ok) {
        let e = out.entry(k).or_default();
        for c in per_cpu.iter() {
            e.add(c);
        }
    }
    out
}

impl DeleteMaps {
    fn slots(&self) -> Vec<DeletePending> {
        self.pending
            .get(&0, 0)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn read(&self) -> DeleteTotals {
        let mut tries = 0;
        loop {
            tries += 1;
            let before = self.slots();
            let mut t = DeleteTotals {
                by_proc: sum(&self.by_proc),
                by_dir: sum(&self.by_dir),
                by_mount: sum(&self.by_mount),
            };
            let after = self.slots();
            let settled = before.len() == after.len()
                && before
                    .iter()
                    .zip(&after)
                    .all(|(b, a)| b.seq == a.seq && b.seq % 2 == 0);
            if settled || tries == TRIES {
                // Unsettled on every try: the later slots are the better guess (a move that
                // finished before its map was read is in the map, not in the slot any more).
                t.add_pending(if settled { &before } else { &after });
                if !settled {
                    tracing::debug!("deletion counts read while moves ran on every try");
                }
                return t;
            }
        }
    }
}

impl DeleteTotals {
    /// Adds each CPU's not-yet-moved counts to their keys.
    pub fn add_pending(&mut self, slots: &[DeletePending]) {
        for s in slots {
            if s.used & PENDING_PROC != 0 {
                self.by_proc.entry(s.tgid).or_default().add(&s.by_proc);
            }
            if s.used & PENDING_DIR != 0 {
                self.by_dir.entry(s.dir).or_default().add(&s.by_dir);
            }
            if s.used & PENDING_MOUNT != 0 {
                self.by_mount.entry(s.mount).or_default().add(&s.by_mount);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(n: u64) -> EntryCounts {
        EntryCounts {
            files: n,
            ..Default::default()
        }
    }

    #[test]
    fn pending_slots_add_to_their_keys_and_unused_slots_add_nothing() {
        let dir = DirKey {
            dev: 7,
            _pad0: 0,
            ino: 100,
        };
        let mut t = DeleteTotals::default();
        t.by_proc.insert(42, files(10));
        t.by_mount.insert(7, files(10));
        let slots = [
            DeletePending {
                seq: 2,
                dir,
                tgid: 42,
                mount: 7,
                used: PENDING_PROC | PENDING_DIR | PENDING_MOUNT,
                by_proc: files(5),
                by_dir: files(5),
                by_mount: files(5),
                ..Default::default()
            },
            // A CPU that never counted a deletion: zeroed keys must not appear.
            DeletePending::default(),
            DeletePending {
                seq: 4,
                dir,
                tgid: 43,
                mount: 7,
                used: PENDING_PROC | PENDING_DIR | PENDING_MOUNT,
                by_proc: files(1),
                by_dir: files(1),
                by_mount: files(1),
                ..Default::default()
            },
        ];
        t.add_pending(&slots);
        assert_eq!(t.by_proc[&42].files, 15);
        assert_eq!(t.by_proc[&43].files, 1);
        assert_eq!(t.by_dir[&dir].files, 6);
        assert_eq!(t.by_mount[&7].files, 16);
        assert!(!t.by_proc.contains_key(&0) && !t.by_mount.contains_key(&0));
        assert_eq!(t.by_dir.len(), 1);
    }
}
