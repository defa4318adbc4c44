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
//!   bench-pwrite FILE SIZE N | bench-open DIR N | bench-utimens FILE N | bench-unlink DIR N
//!   bench-getppid N                       N getppid calls (a syscall nobody watches)
//!   storm FILE N                          N failing appends (the file's fs must be full)
//!   storm-rate FILE RATE SECS             failing appends at RATE per second for SECS
use std::{ffi::CString, process::exit};

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in arguments")
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn open(path: &str, flags: i32) -> i32 {
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
        ["rename", old, new] => rename(old, new),
        ["churn", dir, n] => churn(dir, num(n)),
        ["create-excl", dir, n] => create_excl(dir, num(n)),
        ["heartbeat", path, ms, mode] => heartbeat(path, num(ms), mode, None),
        ["heartbeat", path, ms, mode, uid] => heartbeat(path, num(ms), mode, Some(num(uid) as u32)),
        ["contend", path, stale] => contend(path, num(stale)),
        ["bench-pwrite", file, size, n] => bench_pwrite(file, num(size), num(n)),
        ["bench-open", dir, n] => bench_open(dir, num(n)),
        ["bench-getppid", n] => bench_getppid(num(n)),
        ["bench-utimens", file, n] => bench_utimens(file, num(n)),
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

fn fill(file: &str) {
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

fn create(dir: &str, mode: &str) {
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

fn write_ok(file: &str, n: u64) {
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

fn fail_writes(file: &str, n: u64) {
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

fn hold(file: &str, how: &str, secs: u64) {
    use std::io::Write as _;
    let fd = open(file, libc::O_RDONLY);
    if how == "flock" && unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
        println!("pid={} errno={}", std::process::id(), errno());
        exit(1);
    }
    println!("pid={} ready=1", std::process::id());
    let _: Result<_, _> = std::io::stdout().flush();
    std::thread::sleep(std::time::Duration::from_secs(secs));
}

fn uring_write(file: &str, n: u64) {
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

fn churn(dir: &str, n: u64) {
    let mut failed = 0u64;
    for top in 0..n.min(1000) {
        unsafe { libc::mkdir(cstr(&format!("{dir}/a{top}")).as_ptr(), 0o755) };
    }
    for i in 0..n {
        let leaf = format!("{dir}/a{}/b{i}", i % 1000);
        let file = format!("{leaf}/f");
        let (leaf, file) = (cstr(&leaf), cstr(&file));
        unsafe {
            let ok = libc::mkdir(leaf.as_ptr(), 0o755) == 0
                && {
                    let fd = libc::open(
                        file.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o644,
                    );
                    fd >= 0 && libc::close(fd) == 0
                }
                && libc::unlink(file.as_ptr()) == 0
                && libc::rmdir(leaf.as_ptr()) == 0;
            if !ok {
                failed += 1;
            }
        }
    }
    println!("pid={} ops={n} failed={failed}", std::process::id());
}

fn report(r: i64) {
    let e = if r < 0 { errno() } else { 0 };
    println!("pid={} errno={e}", std::process::id());
}

fn utimens(path: &str, mode: &str) {
    let times = [libc::timespec {
        tv_sec: 1_000_000,
        tv_nsec: 0,
    }; 2];
    let t = if mode == "explicit" {
        times.as_ptr()
    } else {
        std::ptr::null()
    };
    let p = cstr(path);
    report(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), t, 0) } as i64);
}

fn futimens(path: &str) {
    let fd = open(path, libc::O_RDONLY);
    report(unsafe {
        libc::syscall(
            libc::SYS_utimensat,
            fd,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    });
}

fn fallocate(file: &str, len: i64) {
    let fd = open(file, libc::O_CREAT | libc::O_WRONLY);
    report(unsafe { libc::fallocate(fd, 0, 0, len) } as i64);
}

fn mkdirs(dir: &str) {
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

fn create_files(dir: &str, n: u64) {
    for i in 0..n {
        let fd = open(&format!("{dir}/f{i}"), libc::O_CREAT | libc::O_WRONLY);
        unsafe { libc::close(fd) };
    }
    println!("pid={} errno=0 created={n}", std::process::id());
}

fn realtime() -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts
}

fn heartbeat(path: &str, ms: u64, mode: &str, uid: Option<u32>) {
    use std::io::Write as _;
    if let Some(uid) = uid {
        unsafe {
            if libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                eprintln!("setuid {uid}: errno {}", errno());
                exit(2);
            }
        }
    }
    println!("pid={}", std::process::id());
    let _: Result<_, _> = std::io::stdout().flush();
    let p = cstr(path);
    loop {
        let now = realtime();
        let times = [now, now];
        let t = if mode == "explicit" {
            times.as_ptr()
        } else {
            std::ptr::null()
        };
        unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), t, 0) };
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

fn contend(path: &str, stale_ms: u64) {
    let p = cstr(path);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::stat(p.as_ptr(), &mut st) } == 0 {
            let now = realtime();
            let age_ms = (now.tv_sec - st.st_mtime) as i64 * 1000
                + (now.tv_nsec - st.st_mtime_nsec) as i64 / 1_000_000;
            if age_ms > stale_ms as i64 {
                let decided = realtime();
                let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
                let r = unsafe {
                    if is_dir {
                        libc::rmdir(p.as_ptr())
                    } else {
                        libc::unlink(p.as_ptr())
                    }
                };
                let t = realtime();
                let e = if r < 0 { errno() } else { 0 };
                let ns = |t: libc::timespec| t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64;
                println!(
                    "pid={} errno={e} decided_unix_ns={} stolen_unix_ns={}",
                    std::process::id(),
                    ns(decided),
                    ns(t)
                );
                return;
            }
        }
        if std::time::Instant::now() > deadline {
            println!("pid={} errno=-1 never-stale", std::process::id());
            exit(3);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn create_excl(dir: &str, n: u64) {
    for i in 0..n {
        let fd = open(
            &format!("{dir}/f{i}"),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
        );
        unsafe { libc::close(fd) };
    }
    println!("pid={} errno=0 created={n}", std::process::id());
}

fn rename(old: &str, new: &str) {
    let (o, n) = (cstr(old), cstr(new));
    report(unsafe { libc::rename(o.as_ptr(), n.as_ptr()) } as i64);
}

fn num(s: &str) -> u64 {
    s.parse().unwrap_or_else(|_| {
        eprintln!("not a number: {s}");
        exit(2)
    })
}

fn timed(ops: u64, f: impl FnOnce()) {
    let t = std::time::Instant::now();
    f();
    let ns = t.elapsed().as_nanos() as f64;
    println!(
        "pid={} ops={ops} ns_per_op={:.1} elapsed_ns={ns:.0}",
        std::process::id(),
        ns / ops as f64
    );
}

fn bench_pwrite(file: &str, size: u64, n: u64) {
    let fd = open(file, libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC);
    let buf = vec![3u8; size as usize];
    timed(n, || {
        for _ in 0..n {
            unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), 0) };
        }
    });
}

/// A syscall the observer does not watch: what every other call on the node pays.
fn bench_getppid(n: u64) {
    timed(n, || {
        for _ in 0..n {
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
    });
}

fn bench_open(dir: &str, n: u64) {
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

fn bench_utimens(file: &str, n: u64) {
    let p = cstr(file);
    unsafe {
        libc::close(libc::open(
            p.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY,
            0o644,
        ))
    };
    timed(n, || {
        for _ in 0..n {
            unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), std::ptr::null(), 0) };
        }
    });
}

fn bench_unlink(dir: &str, n: u64) {
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

fn rm_tree(dir: &str, dirs: u64, files: u64, pause_us: u64) {
    let path = std::path::Path::new(dir);
    let parent = open(
        path.parent().and_then(|p| p.to_str()).unwrap_or("/"),
        libc::O_RDONLY | libc::O_DIRECTORY,
    );
    let top = open(dir, libc::O_RDONLY | libc::O_DIRECTORY);
    let mut removed = 0u64;
    let mut unlink = |fd: i32, name: &str, flags: i32| {
        if unsafe { libc::unlinkat(fd, cstr(name).as_ptr(), flags) } != 0 {
            eprintln!("unlinkat {name}: errno {}", errno());
            exit(2);
        }
        removed += 1;
    };
    for i in 0..dirs {
        let d = format!("d{i}");
        let fd = unsafe {
            libc::openat(
                top,
                cstr(&d).as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            eprintln!("open {d}: errno {}", errno());
            exit(2);
        }
        for j in 0..files {
            unlink(fd, &format!("f{j}"), 0);
        }
        unsafe { libc::close(fd) };
        unlink(top, &d, libc::AT_REMOVEDIR);
        if pause_us > 0 {
            std::thread::sleep(std::time::Duration::from_micros(pause_us));
        }
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(dir);
    unlink(parent, name, libc::AT_REMOVEDIR);
    println!("pid={} removed={removed}", std::process::id());
}

fn storm(file: &str, n: u64) {
    let fd = open(file, libc::O_WRONLY | libc::O_APPEND);
    let buf = [7u8; 4096];
    timed(n, || {
        for _ in 0..n {
            unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        }
    });
}

fn storm_rate(file: &str, rate: u64, secs: u64) {
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
