//! JSON Lines: one object per event (`"type":"syscall"`) and per stats tick (`"type":"stats"`).

use serde::Serialize;

use super::Rfc3339Micros;
use crate::{
    aggregate::procs::ProcIdentity,
    decode::{SyscallRecord, path_flag_names},
    stats::StatsSnapshot,
};

/// Appends a syscall event made by `who` at `unix_ns` as one JSON object (no trailing
/// newline) to `out`.
///
/// This is the hottest code of a storm, so the object is written field by field in a fixed
/// order: keys and the names this build defines (syscalls, errnos, flags, times) are plain
/// ASCII and are copied as they are; every string that comes from the kernel or `/proc` (comm,
/// path, exe, container and pod names) is escaped by serde_json. The unit tests check the
/// bytes against serde's own serialisation of the same fields.
pub fn syscall_line_into(out: &mut Vec<u8>, r: &SyscallRecord, who: &ProcIdentity, unix_ns: u64) {
    use observer_common::syscall::{COUNT_NONE, is_open_family, spec_of};
    out.reserve(512 + r.path.len() + r.comm.len());
    let mut o = Obj::new(out);
    o.name("type", "syscall");
    o.name("kind", r.kind());
    Rfc3339Micros(unix_ns).with_str(|t| o.name("time", t));
    o.num("time_unix_ns", unix_ns);
    o.num("ktime_ns", r.ktime_ns);
    o.num("pid", r.tgid);
    o.num("tid", r.tid);
    o.num("uid", r.uid);
    o.num("gid", r.gid);
    o.text("comm", &r.comm);
    o.num("cgroup_id", r.cgroup_id);
    o.name("syscall", r.syscall_name());
    o.num("errno", r.errno);
    o.name("errno_name", &crate::errno::name_static(r.errno));
    o.num("ret", r.ret);
    o.num("fd", r.fd);
    if spec_of(r.syscall).count != COUNT_NONE {
        o.num("count", r.count);
    }
    if is_open_family(r.syscall) {
        o.num("open_flags", r.open_flags);
    }
    o.num("ino", r.ino);
    // Kernel dev_t encoding: major << 20 | minor.
    o.key("dev");
    o.out.push(b'"');
    o.out
        .extend_from_slice(itoa::Buffer::new().format(r.dev >> 20).as_bytes());
    o.out.push(b':');
    o.out
        .extend_from_slice(itoa::Buffer::new().format(r.dev & 0xfffff).as_bytes());
    o.out.push(b'"');
    o.num("aux", r.aux);
    // io_uring completions: the request's opcode (absent when the kernel's completion record
    // does not name the request).
    if let Some(op) = r.io_uring_op() {
        o.name("io_uring_op", &op);
    }
    o.text("path", &r.path);
    o.key("path_complete");
    o.out
        .extend_from_slice(if r.path_complete() { b"true" } else { b"false" });
    o.key("path_flags");
    o.out.push(b'[');
    for (i, f) in path_flag_names(r.path_flags).enumerate() {
        if i > 0 {
            o.out.push(b',');
        }
        o.quoted(f);
    }
    o.out.push(b']');
    // Process start time (clock ticks after boot; with pid, a pid-reuse-safe identity).
    o.num("start_time", who.start_time);
    let w = &who.workload;
    for (k, v) in [
        ("exe", &who.exe),
        ("container_id", &w.container_id),
        ("pod_uid", &w.pod_uid),
        ("pod_namespace", &w.pod_namespace),
        ("pod_name", &w.pod_name),
    ] {
        if let Some(v) = v {
            o.text(k, v);
        }
    }
    o.out.push(b'}');
}

/// A JSON object being appended to a buffer.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out, first: true }
    }

    /// `{"k":` or `,"k":` — `k` is one of this file's literal keys (no escaping needed).
    fn key(&mut self, k: &str) {
        self.out.push(if self.first { b'{' } else { b',' });
        self.first = false;
        self.quoted(k);
        self.out.push(b':');
    }

    /// A string this build defines (ASCII letters, digits, `_`, `-`, `:`, `.`): no escaping.
    fn quoted(&mut self, v: &str) {
        debug_assert!(
            v.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        );
        self.out.push(b'"');
        self.out.extend_from_slice(v.as_bytes());
        self.out.push(b'"');
    }

    fn name(&mut self, k: &str, v: &str) {
        self.key(k);
        self.quoted(v);
    }

    /// Any string (from the kernel or `/proc`): escaped by serde_json.
    fn text(&mut self, k: &str, v: &str) {
        self.key(k);
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *self.out, v);
    }

    fn num(&mut self, k: &str, v: impl itoa::Integer) {
        self.key(k);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
}

#[derive(Serialize)]
struct StatsLine<'a> {
    r#type: &'static str,
    #[serde(flatten)]
    stats: &'a StatsSnapshot,
}

pub fn stats_line(stats: &StatsSnapshot) -> String {
    serde_json::to_string(&StatsLine {
        r#type: "stats",
        stats,
    })
    .unwrap_or_else(|e| format!("{{\"type\":\"error\",\"error\":\"{e}\"}}"))
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
