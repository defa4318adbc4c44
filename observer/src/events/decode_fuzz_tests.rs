//! Fuzz target: ring-buffer records, as raw bytes and as well-formed records with hostile
//! fields, through the decoder and the event line. Decoding never panics; whatever decodes
//! renders to one line of valid JSON that carries the decoded path and comm exactly.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use observer_common::event::{COMM_LEN, PATH_BUF_SIZE, SyscallEventBuf};
use proptest::{collection::vec, prelude::*, test_runner::TestCaseError};

use super::*;
use crate::events::identify::ProcIdentity;

/// A record: either raw bytes (a valid header or not), or a syscall event with every field
/// chosen freely and path bytes biased to NULs, slashes, dots and non-UTF-8.
fn records() -> impl Strategy<Value = Vec<u8>> {
    let raw = (vec(any::<u8>(), 0..700), any::<bool>()).prop_map(|(mut b, header)| {
        if header && b.len() >= 8 {
            b[0..4].copy_from_slice(&EVENT_SYSCALL.to_ne_bytes());
            let n = b.len() as u32;
            b[4..8].copy_from_slice(&n.to_ne_bytes());
        }
        b
    });
    let path_byte = prop_oneof![
        3 => b'a'..=b'z',
        1 => Just(0u8),
        1 => Just(b'/'),
        1 => Just(b'.'),
        1 => any::<u8>(),
    ];
    let fields = (
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u64>()),
        (any::<u32>(), any::<u32>(), any::<i64>(), any::<i32>()),
        (any::<u32>(), any::<u64>(), any::<u64>(), any::<u32>()),
        (any::<u32>(), any::<[u8; COMM_LEN]>()),
        (
            vec(path_byte, 0..PATH_BUF_SIZE.min(600)),
            0u16..12,
            any::<u16>(),
            any::<u16>(),
        ),
    );
    let wellformed = fields.prop_map(
        |(
            (tgid, tid, uid, cgroup),
            (syscall, errno, ret, fd),
            (flags, count, ino, dev),
            (aux, comm),
            (path, ncomp, pflags, tail),
        )| {
            let info = PathInfo {
                len: path.len() as u16,
                ncomp,
                flags: pflags,
                tail_off: tail % (path.len() as u16 + 2),
            };
            let mut ev = SyscallEventBuf {
                event: SyscallEvent {
                    header: EventHeader {
                        kind: EVENT_SYSCALL,
                        size: 0,
                        ktime_ns: 1,
                        tgid,
                        tid,
                        uid,
                        gid: uid,
                        cgroup_id: cgroup,
                        comm,
                        mnt_ns: uid ^ tgid,
                        _pad: tid,
                    },
                    syscall,
                    errno,
                    ret,
                    fd,
                    flags,
                    count,
                    ino,
                    dev,
                    aux,
                    nr: syscall as i32,
                    hook: observer_common::event::HOOK_TRACEPOINT,
                    path: info,
                },
                path: [0; PATH_BUF_SIZE],
            };
            ev.path[..path.len()].copy_from_slice(&path);
            let size = SYSCALL_EVENT_PATH_OFFSET + path.len();
            ev.event.header.size = size as u32;
            // SAFETY: a plain-integer repr(C) struct read as the bytes it occupies.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&raw const ev).cast::<u8>(),
                    size_of::<SyscallEventBuf>(),
                )
            };
            bytes[..size].to_vec()
        },
    );
    prop_oneof![1 => raw, 3 => wellformed]
}

fn check(rec: Vec<u8>) -> Result<(), TestCaseError> {
    let Ok(Event::Syscall(r)) = decode(&rec) else {
        return Ok(());
    };
    DECODED.fetch_add(1, Relaxed);
    let who = ProcIdentity {
        pid: r.tgid,
        comm: r.comm.clone(),
        ..Default::default()
    };
    let mut line = Vec::new();
    super::super::line::syscall_line_into(&mut line, &r, &who, 1_700_000_000_000_000_000);
    prop_assert!(!line.contains(&b'\n'), "a newline inside the line");
    let v: serde_json::Value = serde_json::from_slice(&line)
        .map_err(|e| TestCaseError::fail(format!("invalid JSON ({e}): {line:?}")))?;
    prop_assert_eq!(v["path"].as_str(), Some(r.path.as_str()));
    prop_assert_eq!(v["comm"].as_str(), Some(r.comm.as_str()));
    let shown = crate::node::text::printable(&r.path);
    prop_assert!(
        !shown.chars().any(char::is_control),
        "control characters in the printable path {shown:?}"
    );
    Ok(())
}

/// Records that decoded (and so were rendered): the rendering must be exercised.
static DECODED: AtomicU64 = AtomicU64::new(0);

#[test]
fn fuzz_decode_and_render() {
    crate::node::fuzzing::run("decode", records(), check);
    let decoded = DECODED.load(Relaxed);
    eprintln!("fuzz decode: {decoded} decoded and rendered");
    assert!(decoded >= 200, "only {decoded} records decoded");
}
