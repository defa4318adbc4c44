use observer_common::event::{COMM_LEN, PATH_BUF_SIZE, SyscallEventBuf};

use super::*;

fn record(path: &[u8], info: PathInfo) -> Vec<u8> {
    let mut ev = SyscallEventBuf {
        event: SyscallEvent {
            header: EventHeader {
                kind: EVENT_SYSCALL,
                size: 0,
                ktime_ns: 7,
                tgid: 100,
                tid: 101,
                uid: 0,
                gid: 0,
                cgroup_id: 1,
                comm: [0; COMM_LEN],
                mnt_ns: 4026531841,
                _pad: 0,
            },
            syscall: syscall::SYS_WRITE,
            errno: 28,
            ret: -28,
            fd: 3,
            flags: 0,
            count: 4096,
            ino: 12,
            dev: 0x1234,
            aux: 0,
            nr: 1,
            hook: observer_common::event::HOOK_TRACEPOINT,
            path: info,
        },
        path: [0; PATH_BUF_SIZE],
    };
    ev.event.header.comm[..5].copy_from_slice(b"dd\0\0\0");
    ev.path[..path.len()].copy_from_slice(path);
    let size = SYSCALL_EVENT_PATH_OFFSET + info.len as usize;
    ev.event.header.size = size as u32;
    let bytes = unsafe {
        std::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<SyscallEventBuf>())
    };
    bytes[..size].to_vec()
}

fn info(len: usize, ncomp: u16, flags: u16, tail_off: u16) -> PathInfo {
    PathInfo {
        len: len as u16,
        ncomp,
        flags,
        tail_off,
    }
}

#[test]
fn decodes_walked_path() {
    let p = b"file\0mnt\0tmp\0";
    let rec = record(p, info(p.len(), 3, PATH_WALKED | PATH_REACHED_ROOT, 0));
    let Event::Syscall(r) = decode(&rec).unwrap();
    assert_eq!(r.path, "/tmp/mnt/file");
    assert_eq!(r.comm, "dd");
    assert_eq!(
        (r.tgid, r.errno, r.count, r.syscall_name(), r.mnt_ns),
        (100, 28, 4096, "write", 4026531841)
    );
    assert!(r.path_complete());
}

#[test]
fn decodes_relative_tail_and_absolute_tail() {
    let p = b"mnt\0tmp\0./f1\0";
    let flags = PATH_WALKED | PATH_REACHED_ROOT | PATH_HAS_TAIL | PATH_BASE_DIRFD;
    let Event::Syscall(r) = decode(&record(p, info(p.len(), 2, flags, 8))).unwrap();
    assert_eq!(r.path, "/tmp/mnt/f1");

    let p = b"/abs//x/\0";
    let Event::Syscall(r) = decode(&record(p, info(p.len(), 0, PATH_HAS_TAIL, 0))).unwrap();
    assert_eq!(r.path, "/abs/x");
}

#[test]
fn truncated_walk_is_marked() {
    let p = b"leaf\0dir\0";
    let Event::Syscall(r) = decode(&record(
        p,
        info(p.len(), 2, PATH_WALKED | PATH_TRUNCATED, 0),
    ))
    .unwrap();
    assert_eq!(r.path, ".../dir/leaf");
    assert!(!r.path_complete());
}

#[test]
fn rejects_short_and_garbage_records_without_panicking() {
    assert!(matches!(decode(&[]), Err(DecodeError::Short { .. })));
    assert!(matches!(decode(&[1, 2, 3]), Err(DecodeError::Short { .. })));
    let p = b"a\0";
    let good = record(p, info(p.len(), 1, PATH_WALKED, 0));
    // Truncated by one byte: the header size no longer matches.
    assert!(matches!(
        decode(&good[..good.len() - 1]),
        Err(DecodeError::SizeMismatch { .. })
    ));
    // A header claiming the short length: body check fails.
    let mut short = good[..60].to_vec();
    short[4..8].copy_from_slice(&60u32.to_ne_bytes());
    assert!(matches!(decode(&short), Err(DecodeError::Short { .. })));
    // Unknown kind.
    let mut unk = good.clone();
    unk[0..4].copy_from_slice(&99u32.to_ne_bytes());
    assert_eq!(decode(&unk), Err(DecodeError::UnknownKind(99)));
    // Path length beyond the record.
    let mut over = good.clone();
    let at = std::mem::offset_of!(SyscallEvent, path);
    over[at..at + 2].copy_from_slice(&500u16.to_ne_bytes());
    assert!(matches!(
        decode(&over),
        Err(DecodeError::PathOverrun { len: 500 })
    ));
    // Components claimed but not terminated.
    let p = b"abc";
    assert!(matches!(
        decode(&record(p, info(p.len(), 1, PATH_WALKED, 0))),
        Err(DecodeError::Path(_))
    ));
    // Tail offset overlapping the components.
    let p = b"abc\0tail\0";
    assert!(matches!(
        decode(&record(p, info(p.len(), 1, PATH_WALKED | PATH_HAS_TAIL, 1))),
        Err(DecodeError::Path(_))
    ));
}

#[test]
fn random_bytes_never_panic() {
    // A cheap deterministic fuzz: xorshift bytes with a plausible header.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for round in 0..20_000usize {
        let len = round % 600;
        let mut buf = vec![0u8; len];
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        if len >= 8 {
            buf[0..4].copy_from_slice(&EVENT_SYSCALL.to_ne_bytes());
            buf[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
        }
        let _: Result<_, _> = decode(&buf);
    }
}

/// Records that pass the length checks (a valid header, path info inside the record), with
/// random path bytes and flags: the path assembly itself is exercised, and must never panic.
#[test]
fn random_paths_in_well_formed_records_never_panic() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut walked, mut rejected_path) = (0, 0);
    for _ in 0..20_000 {
        let len = (next() % 300) as usize;
        // Mostly printable bytes, with NULs and slashes in between.
        let bytes: Vec<u8> = (0..len)
            .map(|_| match next() % 10 {
                0 => 0,
                1 => b'/',
                2 => (next() % 256) as u8,
                _ => b'a' + (next() % 26) as u8,
            })
            .collect();
        let ncomp = (next() % 8) as u16;
        let flags = (next() % 256) as u16;
        let tail_off = (next() % (len as u64 + 2)) as u16;
        match decode(&record(&bytes, info(len, ncomp, flags, tail_off))) {
            Ok(Event::Syscall(r)) => {
                if ncomp > 0 {
                    walked += 1;
                }
                assert!(!r.path.contains("//"), "{:?}", r.path);
            }
            Err(DecodeError::Path(_)) => rejected_path += 1,
            Err(e) => panic!("a well-formed record failed before its path: {e}"),
        }
    }
    // Both outcomes are exercised, components assembled as well as rejected, not just the
    // length checks.
    assert!(
        walked > 2_000 && rejected_path > 2_000,
        "{walked} decoded with components, {rejected_path} rejected"
    );
}
