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
    /// CPU -> (`seq`, parts) of a pending slot whose directory or filesystem key was forgotten
    /// (its filesystem unmounted): those parts are left out of reads while the slot is unchanged.
    pub forgotten: HashMap<usize, (u64, u32)>,
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

    /// Leaves out of later reads what each CPU's pending slot holds now for the filesystems
    /// `gone` (until the slot changes).
    pub fn forget_pending(&mut self, gone: &std::collections::HashSet<u32>) {
        for (cpu, s) in self.slots().iter().enumerate() {
            let mut parts = 0;
            if s.used & PENDING_DIR != 0 && gone.contains(&s.dir.dev) {
                parts |= PENDING_DIR;
            }
            if s.used & PENDING_MOUNT != 0 && gone.contains(&s.mount) {
                parts |= PENDING_MOUNT;
            }
            if parts != 0 {
                self.forgotten.insert(cpu, (s.seq, parts));
            }
        }
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
                t.add_pending(&remembered(
                    &self.forgotten,
                    if settled { &before } else { &after },
                ));
                if !settled {
                    tracing::debug!("deletion counts read while moves ran on every try");
                }
                return t;
            }
        }
    }
}

/// `slots` without the parts `forgotten` (CPU -> (`seq`, parts)) while a slot is unchanged.
fn remembered(
    forgotten: &HashMap<usize, (u64, u32)>,
    slots: &[DeletePending],
) -> Vec<DeletePending> {
    let mut out = slots.to_vec();
    for (cpu, s) in out.iter_mut().enumerate() {
        if let Some(&(seq, parts)) = forgotten.get(&cpu)
            && s.seq == seq
        {
            s.used &= !parts;
        }
    }
    out
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

    #[test]
    fn a_forgotten_filesystems_pending_counts_are_left_out_until_the_slot_changes() {
        let dir = DirKey {
            dev: 7,
            _pad0: 0,
            ino: 1,
        };
        let slot = |seq| DeletePending {
            seq,
            dir,
            tgid: 42,
            mount: 7,
            used: PENDING_PROC | PENDING_DIR | PENDING_MOUNT,
            by_proc: files(3),
            by_dir: files(3),
            by_mount: files(3),
            ..Default::default()
        };
        // CPU 1's slot held filesystem 7's keys when it was forgotten; CPU 0's did not.
        let forgotten = HashMap::from([(1, (4, PENDING_DIR | PENDING_MOUNT))]);
        let mut t = DeleteTotals::default();
        t.add_pending(&remembered(
            &forgotten,
            &[DeletePending::default(), slot(4)],
        ));
        assert!(t.by_dir.is_empty() && t.by_mount.is_empty(), "{t:?}");
        assert_eq!(
            t.by_proc[&42].files, 3,
            "the process's counts are not the filesystem's"
        );
        // The slot moved since (its seq changed): read again as it is.
        let mut t = DeleteTotals::default();
        t.add_pending(&remembered(
            &forgotten,
            &[DeletePending::default(), slot(6)],
        ));
        assert_eq!((t.by_dir[&dir].files, t.by_mount[&7].files), (3, 3));
    }
}
