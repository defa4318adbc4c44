//! Flight recorder: the last N event lines and per-second aggregate snapshots, bounded in count
//! and bytes, written out as a dump (`GET /dump`, `observer dump`) or, on the first burst of
//! ENOSPC/EDQUOT, to the configured dump directory.

use std::{
    collections::VecDeque,
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;

use crate::{events::kind::EventKind, record::published::Published};

#[derive(Clone, Debug)]
pub struct RecorderLimits {
    pub max_events: usize,
    pub max_bytes: usize,
    pub max_snapshots: usize,
}

/// Events of one kind of importance, oldest first, and their cost in bytes.
#[derive(Default)]
struct Lane {
    events: VecDeque<Arc<Published>>,
    bytes: usize,
}

impl Lane {
    fn push(&mut self, ev: Arc<Published>) {
        self.bytes += ev.cost();
        self.events.push_back(ev);
    }

    fn pop(&mut self) -> bool {
        match self.events.pop_front() {
            Some(old) => {
                self.bytes -= old.cost();
                true
            }
            None => false,
        }
    }

    /// More than half the window's count or bytes.
    fn over_half(&self, limits: &RecorderLimits) -> bool {
        self.events.len() > limits.max_events / 2 || self.bytes > limits.max_bytes / 2
    }
}

/// The window keeps two lanes: **notable** events (failures, lock-guard and purge events: what a
/// dump is for) and **routine** ones (successful deletions, creations and refreshes, sampled or
/// reported while a lock is held). When the window is full the oldest event of the lane holding
/// more than its half goes, so a flood of one kind — a node's `rm -rf` reported event by event,
/// or an ENOSPC storm — can take at most half the window from the other: the ENOSPC that made a
/// burst is still in the dump written for it.
pub struct Recorder {
    limits: RecorderLimits,
    notable: Lane,
    routine: Lane,
    snapshots: VecDeque<Bytes>,
    /// Events pushed out of the window (by count or bytes).
    pub rotated: u64,
}

/// Whether an event belongs to the notable lane.
fn notable(ev: &Published) -> bool {
    ev.errno != 0
        || matches!(
            ev.kind,
            EventKind::Error | EventKind::Lock | EventKind::Purge
        )
}

impl Recorder {
    pub fn new(limits: RecorderLimits) -> Self {
        Self {
            limits,
            notable: Lane::default(),
            routine: Lane::default(),
            snapshots: VecDeque::new(),
            rotated: 0,
        }
    }

    /// Adds one event.
    pub fn push(&mut self, ev: Arc<Published>) {
        if notable(&ev) {
            self.notable.push(ev);
        } else {
            self.routine.push(ev);
        }
        while self.len() > self.limits.max_events
            || self.notable.bytes + self.routine.bytes > self.limits.max_bytes
        {
            let lane = if self.routine.events.is_empty()
                || (!self.notable.events.is_empty() && !self.routine.over_half(&self.limits))
            {
                &mut self.notable
            } else {
                &mut self.routine
            };
            if !lane.pop() {
                break;
            }
            self.rotated += 1;
        }
    }

    pub fn push_snapshot(&mut self, line: Bytes) {
        self.snapshots.push_back(line);
        while self.snapshots.len() > self.limits.max_snapshots {
            self.snapshots.pop_front();
        }
    }

    /// Both lanes, oldest first.
    fn merged(&self) -> impl Iterator<Item = &Arc<Published>> {
        let (mut a, mut b) = (
            self.notable.events.iter().peekable(),
            self.routine.events.iter().peekable(),
        );
        std::iter::from_fn(move || match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if y.unix_ns < x.unix_ns => b.next(),
            (Some(_), _) => a.next(),
            (None, _) => b.next(),
        })
    }

    /// Events at or after `since_unix_ns`, oldest first.
    pub fn events_since(&self, since_unix_ns: u64) -> impl Iterator<Item = &Arc<Published>> {
        self.merged().filter(move |e| e.unix_ns >= since_unix_ns)
    }

    /// `(oldest, newest)` event times in the window.
    pub fn window(&self) -> Option<(u64, u64)> {
        let ends = |l: &Lane| Some((l.events.front()?.unix_ns, l.events.back()?.unix_ns));
        match (ends(&self.notable), ends(&self.routine)) {
            (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
            (a, b) => a.or(b),
        }
    }

    pub fn len(&self) -> usize {
        self.notable.events.len() + self.routine.events.len()
    }

    /// What a dump holds, taken quickly (under the state lock); render it with [`Window::dump`]
    /// after the lock is released.
    pub fn window_copy(&self) -> Window {
        Window {
            events: self.merged().cloned().collect(),
            snapshots: self.snapshots.iter().cloned().collect(),
            report: None,
        }
    }
}

/// A copy of the recorder's contents (shared events, no lines rendered yet).
pub struct Window {
    events: Vec<Arc<Published>>,
    snapshots: Vec<Bytes>,
    /// The report object (`"type":"report"`), written last: `observer report --from-dump`.
    pub report: Option<serde_json::Value>,
}

impl Window {
    /// The events, oldest first.
    pub fn events(&self) -> &[Arc<Published>] {
        &self.events
    }

    /// The whole dump in memory (tests; the daemon streams with [`Window::write_to`]).
    #[cfg(test)]
    pub fn dump(&self, header: &serde_json::Value) -> Vec<u8> {
        let mut out = Vec::new();
        let _: Result<_, _> = self.write_to(header, &mut out);
        out
    }

    /// The dump, one JSON object per line: `header`, then events, then snapshots, then the
    /// report object when there is one. Lines are
    /// rendered one at a time into `w`, so a dump never exists whole in memory.
    pub fn write_to(&self, header: &serde_json::Value, w: &mut dyn Write) -> std::io::Result<()> {
        serde_json::to_writer(&mut *w, header)?;
        w.write_all(b"\n")?;
        let mut line = Vec::with_capacity(1024);
        for e in &self.events {
            line.clear();
            e.write_line(&mut line);
            line.push(b'\n');
            w.write_all(&line)?;
        }
        for s in &self.snapshots {
            w.write_all(s)?;
            w.write_all(b"\n")?;
        }
        if let Some(r) = &self.report {
            serde_json::to_writer(&mut *w, r)?;
            w.write_all(b"\n")?;
        }
        w.flush()
    }
}

const DUMP_PREFIX: &str = "fsobserver-dump-";
const DUMP_SUFFIX: &str = ".jsonl";

/// Writes a dump to a new file in `dir` (named after `stamp`) through a temporary name, so a
/// reader never sees half a dump; a failed write leaves nothing behind.
pub fn write_dump(
    dir: &Path,
    stamp: &str,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<PathBuf> {
    let path = dir.join(format!("{DUMP_PREFIX}{stamp}{DUMP_SUFFIX}"));
    let tmp = dir.join(format!(".{DUMP_PREFIX}{stamp}.tmp"));
    let res = (|| {
        // The whole event stream (paths, commands, pods): for root's eyes, like `/dump`.
        let f = std::os::unix::fs::OpenOptionsExt::mode(
            std::fs::OpenOptions::new().write(true).create_new(true),
            0o600,
        )
        .open(&tmp)?;
        let mut w = std::io::BufWriter::with_capacity(256 << 10, f);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if res.is_err() {
        let _: Result<_, _> = std::fs::remove_file(&tmp);
    }
    res.map(|()| path)
}

/// Removes the oldest of the observer's own dumps in `dir` (regular files named like a dump;
/// nothing else is touched) until at most `max_files` and `max_bytes` remain. The newest dump
/// is always kept. Returns how many were removed.
pub fn retain_dumps(dir: &Path, max_files: usize, max_bytes: u64) -> usize {
    use std::os::unix::fs::FileTypeExt as _;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut dumps: Vec<(String, u64)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let ft = e.file_type().ok()?;
            let own = name.starts_with(DUMP_PREFIX) && name.ends_with(DUMP_SUFFIX);
            (own && ft.is_file() && !ft.is_symlink() && !ft.is_fifo())
                .then(|| Some((name, e.metadata().ok()?.len())))?
        })
        .collect();
    // Stamps are RFC 3339 times: names sort oldest first.
    dumps.sort();
    let (mut count, mut bytes) = (dumps.len(), dumps.iter().map(|d| d.1).sum::<u64>());
    let mut removed = 0;
    for (name, len) in &dumps[..dumps.len().saturating_sub(1)] {
        if count <= max_files && bytes <= max_bytes {
            break;
        }
        if std::fs::remove_file(dir.join(name)).is_ok() {
            removed += 1;
        }
        count -= 1;
        bytes -= len;
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event at time `i` whose line is `{"<key>":i}`.
    fn event(i: u64, kind: EventKind, errno: u32, key: &str) -> Arc<Published> {
        Arc::new(Published::ready(
            i,
            kind,
            (errno, 1),
            String::new(),
            String::new(),
            Bytes::from(format!("{{\"{key}\":{i}}}")),
        ))
    }

    /// An ENOSPC (notable).
    fn ev(i: u64) -> Arc<Published> {
        event(i, EventKind::Error, 28, "n")
    }

    #[test]
    fn window_is_bounded_by_count_and_bytes() {
        let one = ev(0).cost();
        let mut r = Recorder::new(RecorderLimits {
            max_events: 4,
            max_bytes: 3 * one + one / 2,
            max_snapshots: 2,
        });
        for i in 0..10u64 {
            r.push(ev(i));
        }
        assert_eq!(r.len(), 3, "the byte bound holds three events");
        assert_eq!(r.rotated, 7);
        assert_eq!(r.window(), Some((7, 9)));
        assert_eq!(r.events_since(9).count(), 1);
        for i in 0..5 {
            r.push_snapshot(Bytes::from(format!("{{\"s\":{i}}}")));
        }
        let dump = String::from_utf8(
            r.window_copy()
                .dump(&serde_json::json!({"type": "dump-header"})),
        )
        .unwrap();
        let lines: Vec<&str> = dump.lines().collect();
        assert_eq!(
            lines,
            [
                "{\"type\":\"dump-header\"}",
                "{\"n\":7}",
                "{\"n\":8}",
                "{\"n\":9}",
                "{\"s\":3}",
                "{\"s\":4}"
            ]
        );
    }

    /// A successful deletion (routine).
    fn routine(i: u64) -> Arc<Published> {
        event(i, EventKind::Delete, 0, "d")
    }

    #[test]
    fn a_flood_of_one_kind_takes_at_most_half_the_window_from_the_other() {
        let limits = RecorderLimits {
            max_events: 10,
            max_bytes: 1 << 20,
            max_snapshots: 1,
        };
        // Two failures, then a node's rm -rf reported deletion by deletion.
        let mut r = Recorder::new(limits.clone());
        r.push(ev(0));
        r.push(ev(1));
        for i in 2..1000 {
            r.push(routine(i));
        }
        let kept: Vec<u64> = r.events_since(0).map(|e| e.unix_ns).collect();
        assert_eq!(
            kept,
            [0, 1, 992, 993, 994, 995, 996, 997, 998, 999],
            "oldest first"
        );
        assert_eq!((r.len(), r.rotated), (10, 990));
        assert_eq!(r.window(), Some((0, 999)));
        // An ENOSPC storm after some deletions: the deletions keep half the window.
        let mut r = Recorder::new(limits);
        for i in 0..8 {
            r.push(routine(i));
        }
        for i in 8..1000 {
            r.push(ev(i));
        }
        let kept: Vec<u64> = r.events_since(0).map(|e| e.unix_ns).collect();
        assert_eq!(kept, [3, 4, 5, 6, 7, 995, 996, 997, 998, 999]);
        let dump = String::from_utf8(r.window_copy().dump(&serde_json::json!({}))).unwrap();
        assert!(dump.contains("{\"d\":3}\n{\"d\":4}") && dump.ends_with("{\"n\":999}\n"));
    }

    #[test]
    fn syscall_events_are_kept_as_records_and_rendered_only_when_read() {
        use observer_common::syscall::SYS_WRITE;
        let r = crate::events::decode::SyscallRecord {
            ktime_ns: 1,
            tgid: 7,
            tid: 7,
            uid: 0,
            gid: 0,
            cgroup_id: 1,
            comm: "dd".into(),
            syscall: SYS_WRITE,
            errno: 28,
            ret: -28,
            fd: 1,
            open_flags: 0,
            count: 4096,
            ino: 2,
            dev: 39,
            aux: 0,
            nr: 1,
            hook: 0,
            path: "/tmp/full/big".into(),
            path_flags: 0,
            seen_as: None,
            view: crate::events::decode::PathView::Node,
            mnt_ns: 0,
        };
        let who = Arc::new(crate::events::identify::ProcIdentity::default());
        let p = Arc::new(Published::syscall(r, who, 1_795_449_821_086_452_338));
        let unrendered = p.cost();
        let mut rec = Recorder::new(RecorderLimits {
            max_events: 10,
            max_bytes: 1 << 20,
            max_snapshots: 1,
        });
        rec.push(p.clone());
        let dump = rec
            .window_copy()
            .dump(&serde_json::json!({"type": "dump-header"}));
        let lines: Vec<serde_json::Value> = String::from_utf8(dump)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["path"], "/tmp/full/big");
        assert_eq!(lines[1]["errno_name"], "ENOSPC");
        assert_eq!(lines[1]["time"], "2026-11-23T16:03:41.086452Z");
        // A dump renders without keeping the text: the recorder's accounting stays true.
        assert_eq!(p.cost(), unrendered);
        let uncached = p.line_uncached();
        assert_eq!(p.cost(), unrendered, "an uncached render keeps nothing");
        // A line rendered for clients is kept and counted, and it is the same line.
        let line = p.line().clone();
        assert_eq!(line, uncached);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&line).unwrap(),
            lines[1]
        );
        assert_eq!(p.cost(), unrendered + line.len());
        let mut again = Vec::new();
        p.write_line(&mut again);
        assert_eq!(again, line);
        assert!(unrendered < line.len(), "a record is smaller than its line");
    }

    #[test]
    fn failed_dump_leaves_no_file() {
        let d = tempfile::tempdir().unwrap();
        let p = write_dump(d.path(), "x", |w| w.write_all(b"{}\n")).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{}\n");
        assert!(write_dump(&d.path().join("missing"), "y", |w| w.write_all(b"{}")).is_err());
        let failing = write_dump(d.path(), "z", |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(failing.is_err());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn retention_removes_only_the_oldest_own_dumps() {
        let d = tempfile::tempdir().unwrap();
        for stamp in ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"] {
            write_dump(d.path(), stamp, |w| w.write_all(&[b'x'; 100])).unwrap();
        }
        std::fs::write(d.path().join("notes.txt"), b"an operator's file").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("fsobserver-dump-0.jsonl"))
            .unwrap();
        assert_eq!(retain_dumps(d.path(), 3, 1 << 20), 1);
        assert_eq!(retain_dumps(d.path(), 3, 250), 1, "bytes bound");
        let mut left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "fsobserver-dump-0.jsonl",
                "fsobserver-dump-2026-01-03.jsonl",
                "fsobserver-dump-2026-01-04.jsonl",
                "notes.txt"
            ]
        );
        assert_eq!(retain_dumps(d.path(), 1, 1), 1, "the newest always stays");
    }
}
