//! The hand-ordered event line against serde's own serialisation of the same fields (the
//! format as it was first defined), byte for byte.

use serde::Serialize;

use super::*;
use crate::events::identify::Workload;

#[derive(Serialize)]
struct Reference<'a> {
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
    errno_name: String,
    ret: i64,
    fd: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    open_flags: Option<u32>,
    ino: u64,
    dev: String,
    aux: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    io_uring_op: Option<String>,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_path: Option<&'a str>,
    mnt_ns: u32,
    path_complete: bool,
    path_flags: Vec<&'static str>,
    start_time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    exe: Option<&'a str>,
    #[serde(flatten)]
    workload: &'a Workload,
}

fn reference(r: &SyscallRecord, who: &ProcIdentity, unix_ns: u64) -> String {
    use observer_common::syscall::{COUNT_NONE, is_open_family, spec_of};
    serde_json::to_string(&Reference {
        r#type: "syscall",
        kind: r.kind().as_str(),
        time: humantime::format_rfc3339_micros(
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(unix_ns),
        )
        .to_string(),
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
        errno_name: crate::node::errno::name(r.errno),
        ret: r.ret,
        fd: r.fd,
        count: (spec_of(r.syscall).count != COUNT_NONE).then_some(r.count),
        open_flags: is_open_family(r.syscall).then_some(r.open_flags),
        ino: r.ino,
        dev: format!("{}:{}", r.dev >> 20, r.dev & 0xfffff),
        aux: r.aux,
        io_uring_op: r.io_uring_op().map(|o| o.into_owned()),
        path: r.caller_path(),
        host_path: r.node_path(),
        mnt_ns: r.mnt_ns,
        path_complete: r.path_complete(),
        path_flags: path_flag_names(r.path_flags).collect(),
        start_time: who.start_time,
        exe: who.exe.as_deref(),
        workload: &who.workload,
    })
    .unwrap()
}

pub(crate) fn record(syscall: u32, errno: u32, path: &str, comm: &str) -> SyscallRecord {
    SyscallRecord {
        ktime_ns: 123_456_789,
        tgid: 4242,
        tid: 4243,
        uid: 1000,
        gid: 1000,
        cgroup_id: 99,
        comm: comm.into(),
        syscall,
        errno,
        ret: -i64::from(errno),
        fd: -100,
        open_flags: 0o1101,
        count: 4096,
        ino: u64::MAX,
        dev: (259 << 20) | 3,
        aux: 7,
        nr: 1,
        hook: 0,
        path: path.into(),
        path_flags: observer_common::event::PATH_WALKED | observer_common::event::PATH_REACHED_ROOT,
        seen_as: None,
        view: crate::events::decode::PathView::Node,
        mnt_ns: 4026531841,
    }
}

#[test]
fn line_matches_serde_byte_for_byte() {
    use observer_common::syscall as sc;
    let plain = ProcIdentity {
        pid: 4242,
        start_time: 17,
        comm: "dd".into(),
        ..Default::default()
    };
    let pod = ProcIdentity {
        exe: Some("/usr/bin/wei\"rd\\exe".into()),
        workload: Workload {
            container_id: Some("ab".repeat(32)),
            pod_uid: Some("0f0e0d0c-0b0a-0908-0706-050403020100".into()),
            pod_namespace: Some("jobs".into()),
            pod_name: Some("worker-7".into()),
            unplaced: false,
        },
        ..plain.clone()
    };
    let mut io_uring = record(sc::SYS_IO_URING, 28, "/mnt/x", "iou");
    io_uring.aux = 23; // IORING_OP_WRITE
    let mut unknown_op = io_uring.clone();
    unknown_op.aux = 200;
    let mut truncated = record(sc::SYS_WRITE, 5, "...//a/b", "w");
    truncated.path_flags = observer_common::event::PATH_WALKED
        | observer_common::event::PATH_TRUNCATED
        | observer_common::event::PATH_HAS_TAIL;
    // A container's write: the node's view in `path`, its own in `seen_as`; and one the node
    // has no name for.
    let mut in_container = record(sc::SYS_WRITE, 28, "/var/lib/vol/a/big", "dd");
    in_container.seen_as = Some("/data/big".into());
    let mut caller_only = record(sc::SYS_WRITE, 28, "/data/\"x\"", "dd");
    caller_only.view = crate::events::decode::PathView::Caller;
    let cases = [
        in_container,
        caller_only,
        record(sc::SYS_WRITE, 28, "/tmp/fso/big", "dd"),
        record(
            sc::SYS_OPENAT,
            122,
            "/q/\"quoted\" \\ back\nslash\t\u{1}",
            "tab\tcomm",
        ),
        record(sc::SYS_UNLINKAT, 0, "/ünïcödé/路径/file", "rm"),
        record(sc::SYS_UTIMENSAT, 30, "/locks/a.lock", "holder"),
        record(sc::SYS_CLOSE, 9, "", "c"),
        record(sc::SYS_WRITE, 4000, "/x", "unnamed-errno"),
        io_uring,
        unknown_op,
        truncated,
    ];
    // Times across a second boundary exercise the per-second cache both ways.
    let times = [
        1_795_449_821_086_452_338u64,
        1_795_449_821_999_999_999,
        1_795_449_822_000_000_001,
        1_795_449_821_000_000_000,
        0,
    ];
    for r in &cases {
        for who in [&plain, &pod] {
            for &t in &times {
                let mut mine = b"prefix ".to_vec();
                syscall_line_into(&mut mine, r, who, t);
                let mine = String::from_utf8(mine).unwrap();
                assert_eq!(
                    mine.strip_prefix("prefix ").unwrap(),
                    reference(r, who, t),
                    "syscall {} path {:?}",
                    r.syscall_name(),
                    r.path
                );
            }
        }
    }
}
