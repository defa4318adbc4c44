//! JSON Lines: one object per event (`"type":"syscall"`) and per stats tick (`"type":"stats"`).

use serde::Serialize;

use super::Clock;
use crate::{
    aggregate::procs::{ProcIdentity, Workload},
    decode::{Event, SyscallRecord, path_flag_names},
    stats::StatsSnapshot,
};

#[derive(Serialize)]
struct SyscallLine<'a> {
    r#type: &'static str,
    kind: &'static str,
    time: String,
    time_unix_ns: u64,
    ktime_ns: u64,
    pid: u32,
    tid: u32,
    uid: u32,
    gid: u32,
    comm: &'a str,
    cgroup_id: u64,
    syscall: &'static str,
    errno: u32,
    errno_name: std::borrow::Cow<'static, str>,
    ret: i64,
    fd: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    open_flags: Option<u32>,
    ino: u64,
    dev: String,
    aux: u32,
    /// io_uring completions: the request's opcode (`write`, `openat`, ...; absent when the
    /// kernel's completion record does not name the request).
    #[serde(skip_serializing_if = "Option::is_none")]
    io_uring_op: Option<std::borrow::Cow<'static, str>>,
    path: &'a str,
    path_complete: bool,
    path_flags: Vec<&'static str>,
    /// Process start time (clock ticks after boot; with pid, a pid-reuse-safe identity).
    start_time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    exe: Option<&'a str>,
    #[serde(flatten)]
    workload: &'a Workload,
}

/// Serialises an event made by `who` as one line (no trailing newline).
pub fn event_line(ev: &Event, who: &ProcIdentity, clock: &Clock) -> String {
    match ev {
        Event::Syscall(r) => syscall_line(r, who, clock),
    }
}

fn syscall_line(r: &SyscallRecord, who: &ProcIdentity, clock: &Clock) -> String {
    use observer_common::syscall::{COUNT_NONE, is_open_family, spec_of};
    let unix_ns = clock.unix_ns(r.ktime_ns);
    let line = SyscallLine {
        r#type: "syscall",
        kind: r.kind(),
        time: super::rfc3339_micros(unix_ns),
        time_unix_ns: unix_ns,
        ktime_ns: r.ktime_ns,
        pid: r.tgid,
        tid: r.tid,
        uid: r.uid,
        gid: r.gid,
        comm: &r.comm,
        cgroup_id: r.cgroup_id,
        syscall: r.syscall_name(),
        errno: r.errno,
        errno_name: crate::errno::name_static(r.errno),
        ret: r.ret,
        fd: r.fd,
        count: (spec_of(r.syscall).count != COUNT_NONE).then_some(r.count),
        open_flags: is_open_family(r.syscall).then_some(r.open_flags),
        ino: r.ino,
        // Kernel dev_t encoding: major << 20 | minor.
        dev: crate::stats::dev_string(r.dev),
        aux: r.aux,
        io_uring_op: r.io_uring_op(),
        path: &r.path,
        path_complete: r.path_complete(),
        path_flags: path_flag_names(r.path_flags),
        start_time: who.start_time,
        exe: who.exe.as_deref(),
        workload: &who.workload,
    };
    // Sized once: no regrowth while serialising (a hot path in a storm).
    let mut out = Vec::with_capacity(640 + r.path.len() + r.comm.len());
    match serde_json::to_writer(&mut out, &line) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(e) => format!("{{\"type\":\"error\",\"error\":\"{e}\"}}"),
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
