//! The daemon stays up and bounded whatever its clients and filesystems do: half-sent
//! requests and readers that never read are cut off by timeouts, connections are capped, a
//! full flight recorder streamed to many clients costs bounded memory, and a hung filesystem
//! (a FUSE daemon stopped with SIGSTOP) never stops `/healthz`, `/metrics` or start-up.

use std::{
    net::TcpStream,
    path::Path,
    time::{Duration, Instant},
};

use integration_tests::{hostile::*, *};

/// The DaemonSet's memory limit, in KiB.
fn manifest_memory_limit_kib() -> u64 {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/kubernetes/daemonset-least-privilege.yaml"),
    )
    .unwrap();
    let limits = text.split("limits:").nth(1).expect("resources.limits");
    let mem = limits
        .lines()
        .find_map(|l| l.trim().strip_prefix("memory:"))
        .expect("limits.memory")
        .trim();
    let mib: u64 = mem
        .strip_suffix("Mi")
        .expect("a limit in Mi")
        .parse()
        .unwrap();
    mib * 1024
}

/// Sockets the observer process holds open.
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Waits until the observer holds at most `n` sockets; false after `within`.
fn sockets_fall_to(pid: u32, n: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if sockets_of(pid) <= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// `/healthz` latencies (ms) of `n` calls 20 ms apart, while `also` runs after each.
fn healthz_latencies(addr: &str, n: usize, mut also: impl FnMut()) -> Vec<f64> {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (code, _) = http_get(addr, "/healthz");
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(code, 200);
        also();
        std::thread::sleep(Duration::from_millis(20));
    }
    ms.sort_by(f64::total_cmp);
    ms
}

fn p99(sorted: &[f64]) -> f64 {
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

#[test]
#[cfg_attr(fsobs_vm, ignore = "host only: the HTTP server is userspace")]
fn half_requests_and_stalled_readers_are_cut_off_and_cost_bounded_memory() {
    let limit = manifest_memory_limit_kib();
    let m = Mount::tmpfs("size=1M");
    let obs = Observer::start(&[
        "--no-stdout",
        "--set",
        "http.header_timeout_ms=2000",
        "--set",
        "http.stall_timeout_ms=5000",
        "--set",
        "http.max_connections=300",
    ]);
    let addr = obs.addr().to_string();
    // A full flight recorder (its byte limit) of long-named failures.
    let f = m.path(&"x".repeat(200));
    workload(&["fill", &f]);
    workload(&["fail-writes", &f, "60000"]);
    let pid = obs.pid();
    let idle = sockets_of(pid);
    let rss_before = obs.rss_kib();

    let mut half: Vec<TcpStream> = (0..200)
        .map(|_| stalled_connection(&addr, b"GET /top HTTP/1.1\r\nHost: x\r\n"))
        .collect();
    let stalled: Vec<TcpStream> = (0..50)
        .map(|_| stalled_connection(&addr, b"GET /dump HTTP/1.1\r\nHost: x\r\n\r\n"))
        .collect();
    let mut rss_max = 0;
    let lat = healthz_latencies(&addr, 100, || rss_max = rss_max.max(obs.rss_kib()));
    eprintln!(
        "healthz p50 {:.1} ms p99 {:.1} ms max {:.1} ms; RSS {rss_before} KiB before, {rss_max} KiB max \
         (limit {limit} KiB)",
        lat[lat.len() / 2],
        p99(&lat),
        lat[lat.len() - 1]
    );
    // Measured on 2 cores: p50 0-1 ms, max 1-8 ms. (When each /dump caller's uid was found by
    // scanning /proc/net/tcp, 50 scans at once put 40-160 ms on the first calls.)
    assert!(p99(&lat) < 100.0, "/healthz p99 {:.1} ms", p99(&lat));
    assert!(
        rss_max < limit,
        "RSS {rss_max} KiB over the DaemonSet's limit {limit} KiB"
    );
    // Header timeout 2 s, stall timeout 5 s: every attacking connection is closed by the
    // server (the test keeps its ends open and never reads).
    assert!(
        sockets_fall_to(pid, idle + 2, Duration::from_secs(20)),
        "the observer still holds {} sockets ({} when idle)",
        sockets_of(pid),
        idle
    );
    assert!(closed_by_server(&mut half[0], Duration::from_secs(1)));
    drop((half, stalled));

    // The cap: 400 connections that send nothing, at most 300 held.
    let many: Vec<TcpStream> = (0..400)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let held = sockets_of(pid);
    assert!(
        held <= idle + 300 + 2,
        "{held} sockets held with a cap of 300"
    );
    drop(many);
}

#[test]
#[cfg_attr(fsobs_vm, ignore = "host only: FUSE and the HTTP server are userspace")]
fn a_hung_filesystem_never_stops_the_daemon() {
    let fs = HungFs::mount();
    let around = fs.dir.parent().unwrap().to_path_buf();
    let cfgdir = tempfile::tempdir().unwrap();
    let cfg = cfgdir.path().join("observer.toml");
    std::fs::write(
        &cfg,
        format!(
            "[capacity]\nmounts = [\"{}\"]\nsample_interval_ms = 200\n\
             [purge]\nenabled = true\n[[purge.policies]]\nname = \"near\"\nroot = \"{}\"\n\
             match = [\"*\"]\nmin_age_secs = 1\n",
            fs.dir.display(),
            around.display()
        ),
    )
    .unwrap();
    let obs = Observer::start(&["--config", cfg.to_str().unwrap()]);
    let addr = obs.addr().to_string();
    fs.hang();
    // A purge run walks into the hung mount's neighbourhood (its answer never comes: the
    // request is sent and left).
    let _walking = stalled_connection(
        &addr,
        b"POST /purge?policy=near HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    std::thread::sleep(Duration::from_secs(1));
    let lat = healthz_latencies(&addr, 50, || {});
    assert!(p99(&lat) < 100.0, "/healthz p99 {:.1} ms", p99(&lat));
    for path in ["/metrics", "/top", "/purge", "/stats"] {
        let t = Instant::now();
        let (code, body) = http_get(&addr, path);
        assert_eq!(code, 200, "{path}: {body:.300}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{path} took {:?}",
            t.elapsed()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let top = obs.top();
        let row = &top["capacity"][0];
        if row["error"]
            .as_str()
            .is_some_and(|e| e.contains("not answering"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hung mount is not reported: {row}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A second observer starts while the filesystem hangs.
    let second = Observer::start(&["--config", cfg.to_str().unwrap()]);
    // Both stop once it answers again. (While it hangs, a process whose thread waits on a
    // FUSE request the stopped daemon had already read cannot finish exiting: the kernel
    // waits for that answer. The observer parks at most one such thread per hung path.)
    fs.resume();
    second.stop();
    obs.stop();
}
