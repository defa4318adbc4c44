//! Failures on purpose: filling a filesystem, failing writes, opens, mkdirs, fallocate, io_uring.

use std::process::exit;

use super::*;

pub(crate) fn fill(file: &str) {
    let fd = open(file, libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC);
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    unsafe { libc::fstat(fd, &mut st) };
    let buf = [0x5au8; 4096];
    let (mut total, mut writes) = (0u64, 0u64);
    loop {
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            println!(
                "pid={} errno={} bytes={total} writes={writes} fd={fd} ino={}",
                std::process::id(),
                errno(),
                st.st_ino
            );
            return;
        }
        total += n as u64;
        writes += 1;
    }
}

pub(crate) fn create(dir: &str, mode: &str) {
    let dirfd = open(dir, libc::O_RDONLY | libc::O_DIRECTORY);
    if mode == "cwd" && unsafe { libc::fchdir(dirfd) } != 0 {
        eprintln!("fchdir: errno {}", errno());
        exit(2);
    }
    for i in 0..100_000 {
        let name = format!("f{i}");
        let (base, path) = match mode {
            "dirfd" => (dirfd, name.clone()),
            "cwd" => (libc::AT_FDCWD, name.clone()),
            "abs" => (libc::AT_FDCWD, format!("{dir}/{name}")),
            _ => {
                eprintln!("mode must be dirfd, cwd or abs");
                exit(2);
            }
        };
        let p = cstr(&path);
        let fd = unsafe {
            libc::openat(
                base,
                p.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            )
        };
        if fd < 0 {
            println!(
                "pid={} errno={} failed={name} dirfd={dirfd}",
                std::process::id(),
                errno()
            );
            return;
        }
        unsafe { libc::close(fd) };
    }
    println!(
        "pid={} errno=0 failed=none dirfd={dirfd}",
        std::process::id()
    );
}

pub(crate) fn write_ok(file: &str, n: u64) {
    let fd = open(file, libc::O_CREAT | libc::O_WRONLY);
    let buf = [1u8; 64];
    for i in 0..n {
        let r = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), ((i % 16) * 64) as i64) };
        if r != 64 {
            println!("pid={} errno={} ok={i}", std::process::id(), errno());
            exit(1);
        }
    }
    println!("pid={} errno=0 ok={n}", std::process::id());
}

pub(crate) fn fail_writes(file: &str, n: u64) {
    let fd = open(file, libc::O_WRONLY | libc::O_APPEND);
    let buf = [7u8; 4096];
    let mut failed = 0u64;
    for _ in 0..n {
        if unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) } < 0 {
            failed += 1;
        }
    }
    println!("pid={} failed={failed}", std::process::id());
}

pub(crate) fn uring_write(file: &str, n: u64) {
    use io_uring::{IoUring, opcode, types};
    let fd = open(file, libc::O_WRONLY | libc::O_APPEND);
    let buf = [7u8; 4096];
    let mut ring = match IoUring::new(8) {
        Ok(r) => r,
        Err(e) => {
            println!("pid={} unsupported={e}", std::process::id());
            exit(3);
        }
    };
    let (mut failed, mut errno) = (0u64, 0i32);
    for i in 0..n {
        let sqe = opcode::Write::new(types::Fd(fd), buf.as_ptr(), buf.len() as u32)
            .offset(u64::MAX) // the file position (O_APPEND)
            .build()
            .user_data(i);
        // SAFETY: `buf` outlives the request (we wait for its completion below).
        unsafe { ring.submission().push(&sqe).expect("queue has room") };
        ring.submit_and_wait(1).expect("io_uring_enter");
        let cqe = ring.completion().next().expect("a completion");
        if cqe.result() < 0 {
            failed += 1;
            errno = -cqe.result();
        }
    }
    println!("pid={} failed={failed} errno={errno}", std::process::id());
}

pub(crate) fn fallocate(file: &str, len: i64) {
    let fd = open(file, libc::O_CREAT | libc::O_WRONLY);
    report(unsafe { libc::fallocate(fd, 0, 0, len) } as i64);
}

pub(crate) fn mkdirs(dir: &str) {
    let dirfd = open(dir, libc::O_RDONLY | libc::O_DIRECTORY);
    for i in 0..100_000 {
        let name = format!("d{i}");
        let p = cstr(&name);
        if unsafe { libc::mkdirat(dirfd, p.as_ptr(), 0o755) } != 0 {
            println!("pid={} errno={} failed={name}", std::process::id(), errno());
            return;
        }
    }
    println!("pid={} errno=0 failed=none", std::process::id());
}

pub(crate) fn storm(file: &str, n: u64) {
    let fd = open(file, libc::O_WRONLY | libc::O_APPEND);
    let buf = [7u8; 4096];
    timed(n, || {
        for _ in 0..n {
            unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        }
    });
}

pub(crate) fn storm_rate(file: &str, rate: u64, secs: u64) {
    let fd = open(file, libc::O_WRONLY | libc::O_APPEND);
    let buf = [7u8; 4096];
    let start = std::time::Instant::now();
    let total = rate * secs;
    for i in 0..total {
        let due = std::time::Duration::from_nanos(i * 1_000_000_000 / rate);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    }
    println!(
        "pid={} ops={total} elapsed_ns={}",
        std::process::id(),
        start.elapsed().as_nanos()
    );
}
