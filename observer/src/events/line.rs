//! The event line: one JSON object per syscall event (`"type":"syscall"`), as stdout, `/events`
//! clients and dumps carry it.

use super::{
    decode::{SyscallRecord, path_flag_names},
    identify::ProcIdentity,
};
use crate::node::clock::Rfc3339Micros;

/// `,"name":` — the key of a field after the first, as one literal.
macro_rules! k {
    ($name:literal) => {
        concat!(",\"", $name, "\":")
    };
}

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
    out.extend_from_slice(br#"{"type":"syscall""#);
    let mut o = Obj { out };
    o.name(k!("kind"), r.kind().as_str());
    Rfc3339Micros(unix_ns).with_str(|t| o.name(k!("time"), t));
    o.num(k!("time_unix_ns"), unix_ns);
    o.num(k!("ktime_ns"), r.ktime_ns);
    o.num(k!("pid"), r.tgid);
    o.num(k!("tid"), r.tid);
    o.num(k!("uid"), r.uid);
    o.num(k!("gid"), r.gid);
    o.text(k!("comm"), &r.comm);
    o.num(k!("cgroup_id"), r.cgroup_id);
    o.name(k!("syscall"), r.syscall_name());
    o.num(k!("errno"), r.errno);
    o.name(k!("errno_name"), &crate::node::errno::name_static(r.errno));
    o.num(k!("ret"), r.ret);
    o.num(k!("fd"), r.fd);
    if spec_of(r.syscall).count != COUNT_NONE {
        o.num(k!("count"), r.count);
    }
    if is_open_family(r.syscall) {
        o.num(k!("open_flags"), r.open_flags);
    }
    o.num(k!("ino"), r.ino);
    // Kernel dev_t encoding: major << 20 | minor.
    o.key(k!("dev"));
    o.out.push(b'"');
    o.out
        .extend_from_slice(itoa::Buffer::new().format(r.dev >> 20).as_bytes());
    o.out.push(b':');
    o.out
        .extend_from_slice(itoa::Buffer::new().format(r.dev & 0xfffff).as_bytes());
    o.out.push(b'"');
    o.num(k!("aux"), r.aux);
    // io_uring completions: the request's opcode (absent when the kernel's completion record
    // does not name the request).
    if let Some(op) = r.io_uring_op() {
        o.name(k!("io_uring_op"), &op);
    }
    // The path as the caller saw it; the node's view of it when the node has one.
    o.text(k!("path"), r.caller_path());
    if let Some(host) = r.node_path() {
        o.text(k!("host_path"), host);
    }
    o.num(k!("mnt_ns"), r.mnt_ns);
    o.key(k!("path_complete"));
    o.out
        .extend_from_slice(if r.path_complete() { b"true" } else { b"false" });
    o.key(k!("path_flags"));
    o.out.push(b'[');
    for (i, f) in path_flag_names(r.path_flags).enumerate() {
        if i > 0 {
            o.out.push(b',');
        }
        o.quoted(f);
    }
    o.out.push(b']');
    // Process start time (clock ticks after boot; with pid, a pid-reuse-safe identity).
    o.num(k!("start_time"), who.start_time);
    let w = &who.workload;
    for (k, v) in [
        (k!("exe"), &who.exe),
        (k!("container_id"), &w.container_id),
        (k!("pod_uid"), &w.pod_uid),
        (k!("pod_namespace"), &w.pod_namespace),
        (k!("pod_name"), &w.pod_name),
    ] {
        if let Some(v) = v {
            o.text(k, v);
        }
    }
    o.out.push(b'}');
}

/// A JSON object being appended to a buffer, after its first field.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
}

impl Obj<'_> {
    /// A key made by `k!` (this file's literal names: no escaping needed).
    fn key(&mut self, k: &str) {
        self.out.extend_from_slice(k.as_bytes());
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
        let _: Result<_, _> = serde_json::to_writer(&mut *self.out, v);
    }

    fn num(&mut self, k: &str, v: impl itoa::Integer) {
        self.key(k);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
}

#[cfg(test)]
#[path = "line_tests.rs"]
pub(crate) mod tests;
