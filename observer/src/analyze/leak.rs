//! Leak detector: directories (rolled-up path prefixes) whose creates keep outpacing deletes
//! over a sliding window — the worktree/lockfile accumulation that fills a volume over months —
//! reported with the processes creating there. Fed by sampled create and delete records
//! (`probes.create_sample`, `probes.delete_sample`), scaled back by their sampling rates.

use std::{
    num::NonZeroUsize,
    time::{Duration, Instant},
};

use lru::LruCache;
use serde::Serialize;

/// Creating processes remembered per prefix.
const CREATORS: usize = 3;

#[derive(Clone, Debug)]
pub struct LeakConfig {
    pub window: Duration,
    /// Net new entries (creates - deletes) over the window that make a suspect.
    pub min_net: u64,
    /// Creates must also be at least this many times the deletes.
    pub ratio: f64,
    pub create_sample: u32,
    pub delete_sample: u32,
}

#[derive(Default)]
struct Entry {
    prev: (u64, u64),
    cur: (u64, u64),
    creators: Vec<Creator>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Creator {
    pub pid: u32,
    pub comm: String,
    /// Sampled creates seen from it (scaled by the sampling rate).
    pub creates: u64,
}

/// A suspected leak.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LeakRow {
    pub path_prefix: String,
    /// Estimated creates and deletes over the last window.
    pub creates: u64,
    pub deletes: u64,
    pub net: i64,
    pub window_secs: u64,
    pub creators: Vec<Creator>,
}

pub struct LeakDetector {
    cfg: LeakConfig,
    /// Deletions each detail record stands for now (the kernel's sampling can change live).
    delete_weight: u64,
    keys: LruCache<String, Entry>,
    window_start: Instant,
}

fn scale(n: u64, sample: u32) -> u64 {
    n * u64::from(sample.max(1))
}

impl LeakDetector {
    pub fn new(cfg: LeakConfig, max_keys: usize) -> Self {
        Self {
            delete_weight: u64::from(cfg.delete_sample.max(1)),
            cfg,
            keys: LruCache::new(NonZeroUsize::new(max_keys.max(1)).expect("non-zero")),
            window_start: Instant::now(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.cfg.create_sample != 0
    }

    pub fn created(&mut self, prefix: &str, pid: u32, comm: &str) {
        let e = self.entry(prefix);
        e.cur.0 += 1;
        if let Some(c) = e.creators.iter_mut().find(|c| c.pid == pid) {
            c.creates += 1;
        } else if e.creators.len() < CREATORS {
            e.creators.push(Creator {
                pid,
                comm: comm.to_string(),
                creates: 1,
            });
        } else if let Some(min) = e.creators.iter_mut().min_by_key(|c| c.creates) {
            // Replace the smallest creator (space-saving top-K).
            *min = Creator {
                pid,
                comm: comm.to_string(),
                creates: min.creates + 1,
            };
        }
    }

    pub fn deleted(&mut self, prefix: &str) {
        let w = self.delete_weight;
        self.entry(prefix).cur.1 += w;
    }

    /// The kernel now records one deletion in `n` (0 is treated as 1).
    pub fn set_delete_weight(&mut self, n: u32) {
        self.delete_weight = u64::from(n.max(1));
    }

    fn entry(&mut self, prefix: &str) -> &mut Entry {
        if !self.keys.contains(prefix) {
            self.keys.put(prefix.to_string(), Entry::default());
        }
        self.keys.get_mut(prefix).expect("present")
    }

    /// Starts a new window when the current one is over (call about once a second).
    pub fn tick(&mut self, now: Instant) {
        if now.duration_since(self.window_start) < self.cfg.window {
            return;
        }
        let stale = now.duration_since(self.window_start) >= self.cfg.window * 2;
        for (_, e) in self.keys.iter_mut() {
            e.prev = if stale { (0, 0) } else { e.cur };
            e.cur = (0, 0);
        }
        self.window_start = now;
    }

    /// Prefixes whose creates outpace deletes over the last window, largest net first.
    pub fn suspects(&self, now: Instant) -> Vec<LeakRow> {
        let w = self.cfg.window.as_secs_f64().max(1e-3);
        let frac = (now.duration_since(self.window_start).as_secs_f64() / w).min(1.0);
        let mut rows: Vec<LeakRow> = self
            .keys
            .iter()
            .filter_map(|(k, e)| {
                let est = |p: u64, c: u64| (p as f64 * (1.0 - frac) + c as f64).round() as u64;
                let creates = scale(est(e.prev.0, e.cur.0), self.cfg.create_sample);
                // Deletions are weighted when observed (the sampling can change live).
                let deletes = est(e.prev.1, e.cur.1);
                let net = creates as i64 - deletes as i64;
                let leaking = net >= self.cfg.min_net as i64
                    && creates as f64 >= self.cfg.ratio * deletes as f64;
                leaking.then(|| LeakRow {
                    path_prefix: k.clone(),
                    creates,
                    deletes,
                    net,
                    window_secs: self.cfg.window.as_secs(),
                    creators: e
                        .creators
                        .iter()
                        .map(|c| Creator {
                            creates: scale(c.creates, self.cfg.create_sample),
                            ..c.clone()
                        })
                        .collect(),
                })
            })
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.net));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det() -> LeakDetector {
        LeakDetector::new(
            LeakConfig {
                window: Duration::from_secs(10),
                min_net: 50,
                ratio: 2.0,
                create_sample: 1,
                delete_sample: 1,
            },
            100,
        )
    }

    #[test]
    fn creates_outpacing_deletes_are_suspects_with_their_creators() {
        let mut d = det();
        for i in 0..100 {
            d.created("/v/worktrees/*", 7 + (i % 2), "git");
            d.created("/v/tmp/*", 9, "job");
            d.deleted("/v/tmp/*");
        }
        let now = Instant::now();
        let s = d.suspects(now);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].path_prefix, "/v/worktrees/*");
        assert_eq!((s[0].creates, s[0].deletes, s[0].net), (100, 0, 100));
        let mut pids: Vec<u32> = s[0].creators.iter().map(|c| c.pid).collect();
        pids.sort();
        assert_eq!(pids, vec![7, 8]);
        // The window slides: after two quiet windows the suspect is gone.
        d.tick(now + Duration::from_secs(10));
        assert_eq!(d.suspects(now + Duration::from_secs(10)).len(), 1);
        d.tick(now + Duration::from_secs(30));
        assert!(d.suspects(now + Duration::from_secs(30)).is_empty());
    }

    #[test]
    fn creator_table_stays_small() {
        let mut d = det();
        for pid in 0..50 {
            d.created("/v/x/*", pid, "p");
        }
        d.created("/v/x/*", 3, "p");
        let e = d.keys.get("/v/x/*").unwrap();
        assert_eq!(e.creators.len(), CREATORS);
        assert_eq!(e.cur.0, 51);
    }
}
