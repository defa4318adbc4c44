//! Workloads the integration tests observe. Each prints one `key=value` result line.
//!
//!   fsobs-workload fill FILE              write 4 KiB chunks until write() fails
//!   fsobs-workload create DIR MODE        create DIR/f<i> until open fails; MODE: dirfd|cwd|abs
//!   fsobs-workload write-ok FILE N        N successful 64-byte pwrite()s
//!   fsobs-workload fail-writes FILE N     N appending 4 KiB writes, ignoring failures
//!   fsobs-workload utimens PATH now|explicit   one utimensat(AT_FDCWD, PATH, ...)
//!   fsobs-workload futimens PATH          utimensat(fd, NULL, NULL) on an fd of PATH
//!   fsobs-workload fallocate FILE LEN     fallocate(fd, 0, 0, LEN)
//!   fsobs-workload mkdirs DIR             mkdirat(dirfd, "d<i>") until it fails
//!   fsobs-workload create-files DIR N     N empty files DIR/f<i>
//!   fsobs-workload create-and-wait DIR N  N empty files DIR/w<i>, then `ready=1`, then sleeps
//!   fsobs-workload rename OLD NEW         rename(OLD, NEW)
//!   fsobs-workload create-excl DIR N      N new files DIR/f<i> with O_CREAT|O_EXCL (like git)
//!   fsobs-workload heartbeat PATH MS now|explicit [UID]   a lock holder: utimensat(PATH)
//!                                         every MS ms forever (explicit: the current time
//!                                         passed explicitly, which needs ownership); as UID
//!   fsobs-workload contend PATH STALE_MS  a contender: polls PATH's mtime and steals (unlink,
//!                                         or rmdir for a directory) once it is STALE_MS old
//!   fsobs-workload churn DIR N            N distinct directories DIR/a<i%1000>/b<i>, each with a
//!                                         file created, unlinked and the directory removed
//!   fsobs-workload uring-write FILE N     N 4 KiB IORING_OP_WRITE appends to FILE through
//!                                         io_uring (no write syscall), counting failed ones
//!   fsobs-workload rm-tree DIR DIRS FILES [PAUSE_US]  removes DIR/d<i>/f<j> the way GNU
//!                                         `rm -rf` does (each name relative to its directory's
//!                                         fd), pausing PAUSE_US after each directory
//!   fsobs-workload hold FILE open|flock SECS   keep FILE open (and flock it) for SECS seconds;
//!                                         prints `pid=` `ready=1` once held
//! Benchmarks (print `ns_per_op=` and `ops=`, timing only the measured loop):
//!   bench-pwrite FILE SIZE N | bench-open DIR N | bench-utimens FILE N [old] | bench-unlink DIR N
//!                                         (`old`: explicit times a day back, as tar and cp -a set)
//!   bench-getppid N                       N getppid calls (a syscall nobody watches)
//!   storm FILE N                          N failing appends (the file's fs must be full)
//!   storm-rate FILE RATE SECS             failing appends at RATE per second for SECS
mod bench;
mod fail;
mod locks;
mod trees;

use std::{ffi::CString, process::exit};

use bench::*;
use fail::*;
use locks::*;
use trees::*;

pub(crate) fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in arguments")
}

pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub(crate) fn open(path: &str, flags: i32) -> i32 {
    let fd = unsafe { libc::open(cstr(path).as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        eprintln!("open {path}: errno {}", errno());
        exit(2);
    }
    fd
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["fill", file] => fill(file),
        ["create", dir, mode] => create(dir, mode),
        ["write-ok", file, n] => write_ok(file, n.parse().expect("count")),
        ["fail-writes", file, n] => fail_writes(file, n.parse().expect("count")),
        ["utimens", path, mode] => utimens(path, mode),
        ["futimens", path] => futimens(path),
        ["fallocate", file, len] => fallocate(file, len.parse().expect("length")),
        ["mkdirs", dir] => mkdirs(dir),
        ["create-files", dir, n] => create_files(dir, n.parse().expect("count")),
        ["create-and-wait", dir, n] => create_and_wait(dir, num(n)),
        ["rename", old, new] => rename(old, new),
        ["churn", dir, n] => churn(dir, num(n)),
        ["create-excl", dir, n] => create_excl(dir, num(n)),
        ["heartbeat", path, ms, mode] => heartbeat(path, num(ms), mode, None),
        ["heartbeat", path, ms, mode, uid] => heartbeat(path, num(ms), mode, Some(num(uid) as u32)),
        ["contend", path, stale] => contend(path, num(stale)),
        ["bench-pwrite", file, size, n] => bench_pwrite(file, num(size), num(n)),
        ["bench-open", dir, n] => bench_open(dir, num(n)),
        ["bench-getppid", n] => bench_getppid(num(n)),
        ["bench-utimens", file, n] => bench_utimens(file, num(n), false),
        ["bench-utimens", file, n, "old"] => bench_utimens(file, num(n), true),
        ["bench-unlink", dir, n] => bench_unlink(dir, num(n)),
        ["uring-write", file, n] => uring_write(file, num(n)),
        ["hold", file, how, secs] => hold(file, how, num(secs)),
        ["rm-tree", dir, dirs, files] => rm_tree(dir, num(dirs), num(files), 0),
        ["rm-tree", dir, dirs, files, pause_us] => {
            rm_tree(dir, num(dirs), num(files), num(pause_us))
        }
        ["storm", file, n] => storm(file, num(n)),
        ["storm-rate", file, rate, secs] => storm_rate(file, num(rate), num(secs)),
        _ => {
            eprintln!("usage: see the header of fsobs-workload.rs");
            exit(2);
        }
    }
}

pub(crate) fn num(s: &str) -> u64 {
    s.parse().unwrap_or_else(|_| {
        eprintln!("not a number: {s}");
        exit(2)
    })
}
