//! Creating and removing trees: churn, exclusive creates, renames, removal like `rm -rf`.

use std::process::exit;

use super::*;

pub(crate) fn churn(dir: &str, n: u64) {
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

pub(crate) fn create_files(dir: &str, n: u64) {
    for i in 0..n {
        let fd = open(&format!("{dir}/f{i}"), libc::O_CREAT | libc::O_WRONLY);
        unsafe { libc::close(fd) };
    }
    println!("pid={} errno=0 created={n}", std::process::id());
}

/// Creates N files, says so, then waits to be killed (a worker dying mid-job).
pub(crate) fn create_and_wait(dir: &str, n: u64) {
    for i in 0..n {
        let fd = open(&format!("{dir}/w{i}"), libc::O_CREAT | libc::O_WRONLY);
        unsafe { libc::close(fd) };
    }
    println!("pid={} ready=1", std::process::id());
    std::thread::sleep(std::time::Duration::from_secs(600));
}

pub(crate) fn create_excl(dir: &str, n: u64) {
    for i in 0..n {
        let fd = open(
            &format!("{dir}/f{i}"),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
        );
        unsafe { libc::close(fd) };
    }
    println!("pid={} errno=0 created={n}", std::process::id());
}

pub(crate) fn rename(old: &str, new: &str) {
    let (o, n) = (cstr(old), cstr(new));
    report(unsafe { libc::rename(o.as_ptr(), n.as_ptr()) } as i64);
}

pub(crate) fn rm_tree(dir: &str, dirs: u64, files: u64, pause_us: u64) {
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
