//! Bounded keyed counters: an LRU of at most `cap` keys; an evicted key's counts move into an
//! "other" bucket, so totals stay exact while memory stays bounded.

use std::{collections::BTreeMap, hash::Hash, num::NonZeroUsize};

use lru::LruCache;
use serde::Serialize;

/// What one key (path prefix, process, workload) did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Failed calls: errno name -> syscall -> count.
    pub errors: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Bytes the failed write-family calls tried to write.
    pub bytes_failed: u64,
    /// Successful deletions (unlink, rmdir, rename) reported in detail.
    pub deletes: u64,
    /// Successful creates reported in detail (sampled; see `probes.create_sample`).
    pub creates: u64,
    pub heartbeats_ok: u64,
    pub heartbeats_failed: u64,
}

/// What one event adds to a key: borrowed names, so counting allocates only for a new key.
#[derive(Clone, Copy, Debug, Default)]
pub struct Delta<'a> {
    /// (errno name, syscall) of a failure.
    pub error: Option<(&'a str, &'static str)>,
    pub bytes_failed: u64,
    pub deletes: u64,
    pub creates: u64,
    pub heartbeats_ok: u64,
    pub heartbeats_failed: u64,
}

impl Counts {
    pub fn add(&mut self, d: &Delta<'_>) {
        // Every field named: a counter added to `Delta` cannot be forgotten here.
        let Delta {
            error,
            bytes_failed,
            deletes,
            creates,
            heartbeats_ok,
            heartbeats_failed,
        } = *d;
        if let Some((errno, syscall)) = error {
            match self.errors.get_mut(errno) {
                Some(by_sc) => *by_sc.entry(syscall).or_default() += 1,
                None => {
                    self.errors
                        .insert(errno.to_string(), BTreeMap::from([(syscall, 1)]));
                }
            }
        }
        self.bytes_failed += bytes_failed;
        self.deletes += deletes;
        self.creates += creates;
        self.heartbeats_ok += heartbeats_ok;
        self.heartbeats_failed += heartbeats_failed;
    }

    pub fn merge(&mut self, o: &Counts) {
        let Counts {
            errors,
            bytes_failed,
            deletes,
            creates,
            heartbeats_ok,
            heartbeats_failed,
        } = o;
        for (errno, by_sc) in errors {
            // No key allocation when the errno is already there (the common case).
            if !self.errors.contains_key(errno) {
                self.errors.insert(errno.clone(), BTreeMap::new());
            }
            let Some(mine) = self.errors.get_mut(errno) else {
                continue;
            };
            for (sc, n) in by_sc {
                *mine.entry(sc).or_default() += n;
            }
        }
        self.bytes_failed += bytes_failed;
        self.deletes += deletes;
        self.creates += creates;
        self.heartbeats_ok += heartbeats_ok;
        self.heartbeats_failed += heartbeats_failed;
    }

    pub fn error_total(&self) -> u64 {
        self.errors.values().flat_map(|m| m.values()).sum()
    }

    /// Failures with `errno_name` (all syscalls).
    #[cfg(test)]
    pub fn errno_total(&self, errno_name: &str) -> u64 {
        self.errors.get(errno_name).map_or(0, |m| m.values().sum())
    }

    /// Activity used to rank keys: failures first, then everything else.
    pub fn weight(&self) -> (u64, u64) {
        (
            self.error_total(),
            self.deletes + self.creates + self.heartbeats_ok + self.heartbeats_failed,
        )
    }
}

/// Values a [`Bounded`] table can fold into its "other" bucket.
pub trait Merge: Default {
    fn merge_into(&self, other: &mut Counts);
}

impl Merge for Counts {
    fn merge_into(&self, other: &mut Counts) {
        other.merge(self);
    }
}

pub struct Bounded<K: Hash + Eq, V> {
    lru: LruCache<K, V>,
    /// Counts of evicted keys.
    pub other: Counts,
    /// How many keys were evicted.
    pub evicted: u64,
}

impl<K: Hash + Eq + Clone, V: Merge> Bounded<K, V> {
    pub fn new(cap: usize) -> Self {
        Self {
            lru: LruCache::new(NonZeroUsize::new(cap.max(1)).expect("non-zero")),
            other: Counts::default(),
            evicted: 0,
        }
    }

    /// The entry of `key`, created (evicting the least recently used key) when missing.
    /// Looked up by a borrowed form (`&str` for `String` keys): the key is copied only when new.
    pub fn entry<Q>(&mut self, key: &Q) -> &mut V
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized + ToOwned<Owned = K>,
    {
        if !self.lru.contains(key) {
            if self.lru.len() == self.lru.cap().get()
                && let Some((_, v)) = self.lru.pop_lru()
            {
                v.merge_into(&mut self.other);
                self.evicted += 1;
            }
            self.lru.put(key.to_owned(), V::default());
        }
        self.lru.get_mut(key).expect("just inserted")
    }

    pub fn len(&self) -> usize {
        self.lru.len()
    }

    /// The `k` heaviest entries by `rank` (largest first) and the sum of all the rest
    /// (including evicted keys).
    pub fn top<R: Ord>(&self, k: usize, rank: impl Fn(&V) -> R) -> (Vec<(&K, &V)>, Counts) {
        let mut all: Vec<(&K, &V)> = self.lru.iter().collect();
        all.sort_by_key(|e| std::cmp::Reverse(rank(e.1)));
        let mut rest = self.other.clone();
        for (_, v) in all.iter().skip(k) {
            v.merge_into(&mut rest);
        }
        all.truncate(k);
        (all, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(n: u64) -> Counts {
        let mut c = Counts::default();
        c.errors
            .entry("ENOSPC".into())
            .or_default()
            .insert("write", n);
        c
    }

    #[test]
    fn eviction_keeps_totals_exact() {
        let mut t: Bounded<u32, Counts> = Bounded::new(3);
        for i in 0..10u32 {
            t.entry(&i).merge(&err(u64::from(i)));
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.evicted, 7);
        let (top, rest) = t.top(2, Counts::weight);
        assert_eq!(top.iter().map(|(k, _)| **k).collect::<Vec<_>>(), vec![9, 8]);
        let shown: u64 = top.iter().map(|(_, v)| v.error_total()).sum();
        assert_eq!(shown + rest.error_total(), (0..10).sum::<u64>());
        assert_eq!(rest.errno_total("ENOSPC"), (0..8).sum::<u64>());
    }
}
