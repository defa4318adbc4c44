//! Lock holders and contenders: utimes heartbeats, a stealing contender, held files.

use std::process::exit;

use super::*;

pub(crate) fn report(r: i64) {
    let e = if r < 0 { errno() } else { 0 };
    println!("pid={} errno={e}", std::process::id());
}

pub(crate) fn utimens(path: &str, mode: &str) {
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

pub(crate) fn futimens(path: &str) {
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

pub(crate) fn realtime() -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts
}

pub(crate) fn heartbeat(path: &str, ms: u64, mode: &str, uid: Option<u32>) {
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

pub(crate) fn contend(path: &str, stale_ms: u64) {
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

pub(crate) fn hold(file: &str, how: &str, secs: u64) {
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
