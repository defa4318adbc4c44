//! Flight recorder: the last N event lines and per-second aggregate snapshots, bounded in count
//! and bytes, written out as a dump (`GET /dump`, `observer dump`) or, on the first burst of
//! ENOSPC/EDQUOT, to the configured dump directory.

use std::{
    collections::VecDeque,
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;

use crate::record::published::Published;

#[derive(Clone, Debug)]
pub struct RecorderLimits {
    pub max_events: usize,
    pub max_bytes: usize,
    pub max_snapshots: usize,
}

pub struct Recorder {
    limits: RecorderLimits,
    events: VecDeque<Arc<Published>>,
    bytes: usize,
    snapshots: VecDeque<Bytes>,
    /// Events pushed out of the window (by count or bytes).
    pub rotated: u64,
}

impl Recorder {
    pub fn new(limits: RecorderLimits) -> Self {
        Self {
            limits,
            events: VecDeque::new(),
            bytes: 0,
            snapshots: VecDeque::new(),
            rotated: 0,
        }
    }

    /// Adds one event.
    pub fn push(&mut self, ev: Arc<Published>) {
        self.bytes += ev.cost();
        self.events.push_back(ev);
        while self.events.len() > self.limits.max_events || self.bytes > self.limits.max_bytes {
            match self.events.pop_front() {
                Some(old) => {
                    self.bytes -= old.cost();
                    self.rotated += 1;
                }
                None => break,
            }
        }
    }

    pub fn push_snapshot(&mut self, line: Bytes) {
        self.snapshots.push_back(line);
        while self.snapshots.len() > self.limits.max_snapshots {
            self.snapshots.pop_front();
        }
    }

    /// Events at or after `since_unix_ns`, oldest first.
    pub fn events_since(&self, since_unix_ns: u64) -> impl Iterator<Item = &Arc<Published>> {
        self.events
            .iter()
            .filter(move |e| e.unix_ns >= since_unix_ns)
    }

    /// `(oldest, newest)` event times in the window.
    pub fn window(&self) -> Option<(u64, u64)> {
        Some((self.events.front()?.unix_ns, self.events.back()?.unix_ns))
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// What a dump holds, taken quickly (under the state lock); render it with [`Window::dump`]
    /// after the lock is released.
    pub fn window_copy(&self) -> Window {
        Window {
            events: self.events.iter().cloned().collect(),
            snapshots: self.snapshots.iter().cloned().collect(),
        }
    }
}

/// A copy of the recorder's contents (shared events, no lines rendered yet).
pub struct Window {
    events: Vec<Arc<Published>>,
    snapshots: Vec<Bytes>,
}

impl Window {
    /// The whole dump: `header`, then events, then snapshots, one JSON object per line.
    pub fn dump(&self, header: &serde_json::Value) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.events.len() * 512 + 4096);
        let _: Result<_, _> = serde_json::to_writer(&mut out, header);
        out.push(b'\n');
        for e in &self.events {
            e.write_line(&mut out);
            out.push(b'\n');
        }
        for s in &self.snapshots {
            out.extend_from_slice(s);
            out.push(b'\n');
        }
        out
    }
}

/// Writes `data` to a new file in `dir` (named after `stamp`) through a temporary name, so a
/// reader never sees half a dump; a failed write leaves nothing behind.
pub fn write_dump(dir: &Path, stamp: &str, data: &[u8]) -> std::io::Result<PathBuf> {
    let path = dir.join(format!("fsobserver-dump-{stamp}.jsonl"));
    let tmp = dir.join(format!(".fsobserver-dump-{stamp}.tmp"));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if res.is_err() {
        let _: Result<_, _> = std::fs::remove_file(&tmp);
    }
    res.map(|()| path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: u64) -> Arc<Published> {
        Arc::new(Published::ready(
            i,
            crate::events::kind::EventKind::Error,
            (28, 1),
            String::new(),
            String::new(),
            Bytes::from(format!("{{\"n\":{i}}}")),
        ))
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
        let p = write_dump(d.path(), "x", b"{}\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{}\n");
        assert!(write_dump(&d.path().join("missing"), "y", b"{}").is_err());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
