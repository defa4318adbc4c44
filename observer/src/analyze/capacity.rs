//! Capacity of watched filesystems: free bytes and inodes sampled with statvfs, their rate of
//! change fitted over a sliding window (least squares), and the seconds until full at that rate.
//! Sampling ([`sample`]) happens on the daemon's capacity thread with a deadline per call; this
//! table only records results, so a hung filesystem never holds its lock.

use std::{
    collections::VecDeque,
    path::PathBuf,
    time::{Duration, Instant},
};

use serde::Serialize;

#[derive(Clone, Copy, Debug)]
struct Sample {
    t: f64,
    free_bytes: f64,
    free_inodes: f64,
}

struct Watched {
    /// Where it is sampled (under `system.node_root`).
    mount: PathBuf,
    /// Its mount point on the node.
    name: String,
    samples: VecDeque<Sample>,
    last: Option<(u64, u64, u64, u64)>,
    error: Option<String>,
    st_dev: Option<u64>,
    /// The fill curve: `(unix ns, used bytes, size)`, at most [`CURVE_POINTS`]; when full,
    /// every other point goes and points are taken half as often (so it spans all the time
    /// since sampling began).
    curve: Vec<(u64, u64, u64)>,
    curve_stride: u64,
    samples_taken: u64,
}

impl Watched {
    fn new(here: &std::path::Path, name: String) -> Self {
        Self {
            mount: here.to_path_buf(),
            name,
            samples: VecDeque::new(),
            last: None,
            error: None,
            st_dev: None,
            curve: Vec::new(),
            curve_stride: 1,
            samples_taken: 0,
        }
    }
}

/// Points kept per fill curve.
pub const CURVE_POINTS: usize = 512;

/// One filesystem's fill curve.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FillCurve {
    pub mount: String,
    /// `[unix ns, used bytes, size bytes]`.
    pub points: Vec<(u64, u64, u64)>,
}

/// One mount's sample, taken without the table's lock: `(size, free, inodes, free inodes)`
/// and the filesystem's `st_dev` (when not known yet), or why there is none.
pub struct Sampled {
    pub values: Result<(u64, u64, u64, u64), crate::node::fsio::FsError>,
    pub st_dev: Option<u64>,
}

/// Samples `mount` (statvfs, and stat for its device unless `known_dev`), each call with a
/// deadline.
pub fn sample(mount: &std::path::Path, known_dev: bool) -> Sampled {
    use std::os::unix::fs::MetadataExt as _;
    let values = crate::node::fsio::statvfs(mount).map(|s| {
        let frag = s.fragment_size().max(1);
        (
            s.blocks() * frag,
            s.blocks_available() * frag,
            s.files(),
            s.files_available(),
        )
    });
    let st_dev = if known_dev || values.is_err() {
        None
    } else {
        crate::node::fsio::metadata(mount).ok().map(|m| m.dev())
    };
    Sampled { values, st_dev }
}

/// One watched filesystem now.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct CapacityRow {
    pub mount: String,
    pub size_bytes: u64,
    pub free_bytes: u64,
    pub inodes: u64,
    pub free_inodes: u64,
    /// Bytes per second being consumed (negative: being freed), over the window.
    pub bytes_per_sec: f64,
    pub inodes_per_sec: f64,
    /// Seconds until no bytes (or inodes) are left at the current rate; absent when not filling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_full_in_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes_full_in_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The filesystem's `st_dev`, once known (not shown).
    #[serde(skip)]
    pub st_dev: Option<u64>,
}

pub struct Capacity {
    watched: Vec<Watched>,
    /// The last pass over deleted-but-open files (empty before the first).
    pub deleted_open: crate::node::deleted::DeletedOpen,
    window: Duration,
    epoch: Instant,
}

impl Capacity {
    /// `mounts`: where each filesystem is opened here, and its mount point on the node (its
    /// name in rows and metrics).
    pub fn new(mounts: &[(PathBuf, PathBuf)], window: Duration) -> Self {
        Self {
            watched: mounts
                .iter()
                .map(|(here, node)| Watched::new(here, node.display().to_string()))
                .collect(),
            window,
            epoch: Instant::now(),
            deleted_open: Default::default(),
        }
    }

    /// Replaces the sampled set with `mounts` (found, not listed: `capacity.mounts` empty),
    /// keeping what was learned of those already sampled.
    pub fn set_found(&mut self, mounts: &[(PathBuf, PathBuf)]) {
        let mut old: Vec<Watched> = std::mem::take(&mut self.watched);
        self.watched = mounts
            .iter()
            .map(|(here, node)| {
                let name = node.display().to_string();
                match old.iter().position(|w| w.name == name) {
                    Some(i) => old.swap_remove(i),
                    None => Watched::new(here, name),
                }
            })
            .collect();
    }

    /// The mounts to sample, and whether each one's device is known.
    pub fn mounts(&self) -> Vec<(PathBuf, bool)> {
        self.watched
            .iter()
            .map(|w| (w.mount.clone(), w.st_dev.is_some()))
            .collect()
    }

    /// Records one sample of every mount (in [`Capacity::mounts`] order).
    pub fn record(&mut self, sampled: Vec<Sampled>) {
        let t = self.epoch.elapsed().as_secs_f64();
        let window = self.window.as_secs_f64();
        for (w, s) in self.watched.iter_mut().zip(sampled) {
            if s.st_dev.is_some() {
                w.st_dev = s.st_dev;
            }
            match s.values {
                Ok((size, free, files, ffree)) => {
                    w.last = Some((size, free, files, ffree));
                    if w.samples_taken.is_multiple_of(w.curve_stride) {
                        let now = crate::node::clock::now_unix_ns();
                        w.curve.push((now, size.saturating_sub(free), size));
                        if w.curve.len() >= CURVE_POINTS {
                            let mut i = 0;
                            w.curve.retain(|_| {
                                i += 1;
                                i % 2 == 1
                            });
                            w.curve_stride *= 2;
                        }
                    }
                    w.samples_taken += 1;
                    w.error = None;
                    w.samples.push_back(Sample {
                        t,
                        free_bytes: free as f64,
                        free_inodes: ffree as f64,
                    });
                    while w.samples.front().is_some_and(|s| t - s.t > window) {
                        w.samples.pop_front();
                    }
                }
                Err(e) => w.error = Some(e.to_string()),
            }
        }
    }

    /// Every sampled filesystem's fill curve.
    pub fn curves(&self) -> Vec<FillCurve> {
        self.watched
            .iter()
            .map(|w| FillCurve {
                mount: w.name.clone(),
                points: w.curve.clone(),
            })
            .collect()
    }

    pub fn rows(&self) -> Vec<CapacityRow> {
        self.watched
            .iter()
            .map(|w| {
                let mut row = CapacityRow {
                    mount: w.name.clone(),
                    error: w.error.clone(),
                    st_dev: w.st_dev,
                    ..Default::default()
                };
                if let Some((size, free, files, ffree)) = w.last {
                    row.size_bytes = size;
                    row.free_bytes = free;
                    row.inodes = files;
                    row.free_inodes = ffree;
                }
                let pts = |f: fn(&Sample) -> f64| -> Vec<(f64, f64)> {
                    w.samples.iter().map(|s| (s.t, f(s))).collect()
                };
                if let Some(slope) = slope(&pts(|s| s.free_bytes)) {
                    row.bytes_per_sec = -slope;
                    row.bytes_full_in_secs = full_in(row.free_bytes as f64, -slope);
                }
                if let Some(slope) = slope(&pts(|s| s.free_inodes)) {
                    row.inodes_per_sec = -slope;
                    row.inodes_full_in_secs = full_in(row.free_inodes as f64, -slope);
                }
                row
            })
            .collect()
    }
}

fn full_in(free: f64, consume_per_sec: f64) -> Option<f64> {
    (consume_per_sec > 0.0).then(|| free / consume_per_sec)
}

/// Least-squares slope of `(t, y)`; needs 3 points over at least 1 s.
fn slope(p: &[(f64, f64)]) -> Option<f64> {
    if p.len() < 3 || p[p.len() - 1].0 - p[0].0 < 1.0 {
        return None;
    }
    let n = p.len() as f64;
    let (mt, my) = (
        p.iter().map(|x| x.0).sum::<f64>() / n,
        p.iter().map(|x| x.1).sum::<f64>() / n,
    );
    let cov: f64 = p.iter().map(|(t, y)| (t - mt) * (y - my)).sum();
    let var: f64 = p.iter().map(|(t, _)| (t - mt) * (t - mt)).sum();
    (var > 0.0).then(|| cov / var)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_steady_fill() {
        let p: Vec<(f64, f64)> = (0..10)
            .map(|i| (i as f64, 1000.0 - 50.0 * i as f64))
            .collect();
        let s = slope(&p).unwrap();
        assert!((s + 50.0).abs() < 1e-9);
        assert_eq!(full_in(550.0, -s), Some(11.0));
        assert_eq!(full_in(550.0, 0.0), None);
        assert_eq!(slope(&p[..2]), None);
    }
}
