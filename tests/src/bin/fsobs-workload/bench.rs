//! Micro-benchmarks: ns per operation of the measured loop only.

use std::ffi::CString;

use super::*;

pub(crate) fn timed(ops: u64, f: impl FnOnce()) {
    let t = std::time::Instant::now();
    f();
    let ns = t.elapsed().as_nanos() as f64;
    println!(
        "pid={} ops={ops} ns_per_op={:.1} elapsed_ns={ns:.0}",
        std::process::id(),
        ns / ops as f64
    );
}

pub(crate) fn bench_pwrite(file: &str, size: u64, n: u64) {
    let fd = open(file, libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC);
    let buf = vec![3u8; size as usize];
    timed(n, || {
        for _ in 0..n {
            unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), 0) };
        }
    });
}

/// A syscall the observer does not watch: what every other call on the node pays.
pub(crate) fn bench_getppid(n: u64) {
    timed(n, || {
        for _ in 0..n {
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
    });
}

pub(crate) fn bench_open(dir: &str, n: u64) {
    let dirfd = open(dir, libc::O_RDONLY | libc::O_DIRECTORY);
    let names: Vec<CString> = (0..n).map(|i| cstr(&format!("o{i}"))).collect();
    timed(n, || {
        for p in &names {
            let fd = unsafe {
                libc::openat(
                    dirfd,
                    p.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                )
            };
            unsafe { libc::close(fd) };
        }
    });
}

/// `n` utimensat calls on `file`: times set to now (a heartbeat, `touch`), or with `old`
/// explicit times a day back (what tar, `cp -a` and `rsync -a` do).
pub(crate) fn bench_utimens(file: &str, n: u64, old: bool) {
    let p = cstr(file);
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let day_back = libc::timespec {
        tv_sec: now.tv_sec - 86_400,
        tv_nsec: 0,
    };
    let times = [day_back, day_back];
    let times = if old {
        times.as_ptr()
    } else {
        std::ptr::null()
    };
    unsafe {
        libc::close(libc::open(
            p.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY,
            0o644,
        ))
    };
    timed(n, || {
        for _ in 0..n {
            unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times, 0) };
        }
    });
}

pub(crate) fn bench_unlink(dir: &str, n: u64) {
    let dirfd = open(dir, libc::O_RDONLY | libc::O_DIRECTORY);
    let names: Vec<CString> = (0..n).map(|i| cstr(&format!("u{i}"))).collect();
    for p in &names {
        unsafe {
            libc::close(libc::openat(
                dirfd,
                p.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY,
                0o644,
            ))
        };
    }
    timed(n, || {
        for p in &names {
            unsafe { libc::unlinkat(dirfd, p.as_ptr(), 0) };
        }
    });
}
