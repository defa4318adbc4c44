//! Human columns for `observer tail` and `observer replay`: time, comm[pid], workload,
//! syscall, errno, path — colored by outcome when writing to a terminal.

use serde::Deserialize;

use crate::events::{filter::View, kind::EventKind};

/// The fields of an event line that the columns and filters use.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EventLine {
    pub r#type: String,
    pub kind: EventKind,
    pub time: String,
    pub time_unix_ns: u64,
    pub pid: u32,
    pub comm: String,
    pub syscall: String,
    pub io_uring_op: Option<String>,
    pub errno: u32,
    pub errno_name: String,
    pub path: String,
    /// The node's name for the file (absent when the node has none); `path` is the caller's.
    pub host_path: Option<String>,
    pub container_id: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
}

impl View for EventLine {
    fn kind(&self) -> EventKind {
        self.kind
    }
    fn errno(&self) -> u32 {
        self.errno
    }
    fn pid(&self) -> u32 {
        self.pid
    }
    fn comm(&self) -> &str {
        &self.comm
    }
    fn path(&self) -> &str {
        self.host_path.as_deref().unwrap_or(&self.path)
    }
    fn unix_ns(&self) -> u64 {
        self.time_unix_ns
    }
}

/// A lock-guard event (`{"type":"lock",...}`) as an [`EventLine`]: the event name in the
/// syscall column, the holder as the process, the lock's last error as the result.
pub fn lock_line(line: &str) -> EventLine {
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    let l = &v["lock"];
    let t = v["time_unix_ns"].as_u64().unwrap_or(0);
    let failing = l["state"] == "heartbeat-failing" || v["event"] == "lock-stolen";
    let errno = if failing {
        l["last_failure"]["errno"].as_u64().unwrap_or(0) as u32
    } else {
        0
    };
    EventLine {
        r#type: "lock".into(),
        kind: EventKind::Lock,
        time: crate::node::clock::rfc3339_micros(t),
        time_unix_ns: t,
        pid: l["holder"]["pid"].as_u64().unwrap_or(0) as u32,
        comm: l["holder"]["comm"].as_str().unwrap_or("").into(),
        syscall: v["event"].as_str().unwrap_or("lock").into(),
        errno,
        errno_name: l["last_failure"]["errno_name"]
            .as_str()
            .unwrap_or("")
            .into(),
        path: l["path"].as_str().unwrap_or("").into(),
        ..Default::default()
    }
}

/// A purge decision (`{"type":"purge",...}`): the action (`purge:deleted`, `purge:skipped`...)
/// in the syscall column, the skip reason as the result.
pub fn purge_line(line: &str) -> EventLine {
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    let t = v["time_unix_ns"].as_u64().unwrap_or(0);
    EventLine {
        r#type: "purge".into(),
        kind: EventKind::Purge,
        time: crate::node::clock::rfc3339_micros(t),
        time_unix_ns: t,
        comm: format!("purge/{}", v["policy"].as_str().unwrap_or("?")),
        syscall: format!("purge:{}", v["action"].as_str().unwrap_or("?")),
        errno_name: v["skip"].as_str().unwrap_or("ok").into(),
        path: v["path"].as_str().unwrap_or("").into(),
        ..Default::default()
    }
}

const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const GREEN: &str = "\x1b[32m";
use crate::node::text::{Printable, printable};

const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// Column header (printed once).
pub fn header() -> String {
    format!(
        "{:<12} {:<22} {:<20} {:<12} {:<8} {}",
        "TIME", "COMM[PID]", "WORKLOAD", "SYSCALL", "RESULT", "PATH"
    )
}

/// One event as a line of columns.
pub fn columns(e: &EventLine, color: bool) -> String {
    // RFC 3339 `2026-11-23T10:00:00.123456Z` -> `10:00:00.123`.
    let time = e.time.get(11..23).unwrap_or(&e.time);
    // Every name is the watched processes' to choose: escaped (a newline would fake a row,
    // an escape sequence would rewrite the terminal).
    let who = if e.pid == 0 {
        printable(&e.comm)
    } else {
        format!("{}[{}]", Printable(&e.comm), e.pid)
    };
    let workload = match (&e.pod_namespace, &e.pod_name, &e.container_id) {
        (Some(ns), Some(n), _) => format!("{}/{}", Printable(ns), Printable(n)),
        (_, _, Some(id)) => printable(&id.chars().take(12).collect::<String>()),
        _ => "-".into(),
    };
    let result = if e.errno == 0 && e.kind != EventKind::Purge {
        "ok".to_string()
    } else {
        printable(&e.errno_name)
    };
    let (on, off) = match (color, e.errno != 0, e.kind) {
        (false, _, _) => ("", ""),
        (true, true, EventKind::Heartbeat) => (YELLOW, RESET),
        (true, true, _) => (RED, RESET),
        (true, false, EventKind::Delete) => (DIM, RESET),
        (true, false, _) => (GREEN, RESET),
    };
    let syscall = match &e.io_uring_op {
        Some(op) => format!("{}:{}", Printable(&e.syscall), Printable(op)),
        None => printable(&e.syscall),
    };
    // The node's path; a container's own view beside it when it differs (or alone, marked,
    // when the node has no name for it).
    let path = match &e.host_path {
        Some(h) if *h != e.path => {
            format!("{} (in container: {})", Printable(h), Printable(&e.path))
        }
        Some(_) => printable(&e.path),
        None if e.container_id.is_some() => format!("(in container) {}", Printable(&e.path)),
        None => printable(&e.path),
    };
    format!(
        "{:<12} {who:<22} {workload:<20} {syscall:<12} {on}{result:<8}{off} {path}",
        Printable(time),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_from_an_event_line() {
        let e: EventLine = serde_json::from_str(
            r#"{"type":"syscall","kind":"error","time":"2026-11-23T10:00:00.123456Z",
                "pid":7,"comm":"dd","syscall":"write","errno":28,"errno_name":"ENOSPC",
                "path":"/mnt/x","pod_namespace":"ci","pod_name":"runner","extra":1}"#,
        )
        .unwrap();
        let line = columns(&e, false);
        assert!(line.starts_with("10:00:00.123 dd[7]"), "{line}");
        assert!(line.contains("ci/runner") && line.contains("ENOSPC") && line.ends_with("/mnt/x"));
        assert!(columns(&e, true).contains("\x1b[31mENOSPC"));
        // A container's write: the node's path, the container's view beside it.
        let c: EventLine = serde_json::from_str(
            r#"{"type":"syscall","kind":"error","time":"2026-11-23T10:00:00.123456Z",
                "pid":7,"comm":"dd","syscall":"write","errno":28,"errno_name":"ENOSPC",
                "path":"/data/x","host_path":"/var/lib/vol/x","container_id":"ab"}"#,
        )
        .unwrap();
        assert!(
            columns(&c, false).ends_with("/var/lib/vol/x (in container: /data/x)"),
            "{}",
            columns(&c, false)
        );
        assert_eq!(c.path(), "/var/lib/vol/x");
        let hostile: EventLine = serde_json::from_str(
            r#"{"type":"syscall","kind":"error","time":"2026-11-23T10:00:00.123456Z",
                "pid":7,"comm":"a\u001b[2Jb","syscall":"write","errno":28,
                "errno_name":"ENOSPC","path":"/mnt/x\nevil 1","pod_namespace":"n\r",
                "pod_name":"p"}"#,
        )
        .unwrap();
        let line = columns(&hostile, false);
        assert!(!line.contains('\x1b') && !line.contains('\n') && !line.contains('\r'));
        assert!(
            line.contains("a\\x1b[2Jb[7]") && line.ends_with("/mnt/x\\nevil 1"),
            "{line}"
        );
    }

    #[test]
    fn lock_events_become_columns() {
        let e = lock_line(
            r#"{"type":"lock","event":"lock-stolen","severity":"critical","time_unix_ns":1000,
                "lock":{"path":"/l/a.lock","state":"stolen","holder":{"pid":7,"comm":"job"},
                "last_failure":{"errno":30,"errno_name":"EROFS"}}}"#,
        );
        let line = columns(&e, false);
        assert!(
            line.contains("job[7]") && line.contains("lock-stolen"),
            "{line}"
        );
        assert!(
            line.contains("EROFS") && line.ends_with("/l/a.lock"),
            "{line}"
        );
        assert_eq!(View::kind(&e), EventKind::Lock);
    }

    #[test]
    fn purge_decisions_become_columns() {
        let e = purge_line(
            r#"{"type":"purge","policy":"wt","action":"skipped","skip":"open-files",
                "time_unix_ns":1000,"path":"/w/a"}"#,
        );
        let line = columns(&e, false);
        assert!(
            line.contains("purge/wt") && line.contains("purge:skipped"),
            "{line}"
        );
        assert!(
            line.contains("open-files") && line.ends_with("/w/a"),
            "{line}"
        );
        assert_eq!(View::kind(&e), EventKind::Purge);
    }
}
