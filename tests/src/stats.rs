//! Reading a stopped observer's final stats line: exact in-kernel counts per call, errno,
//! filesystem and process.

use std::path::Path;

use crate::Value;

/// The final `{"type":"stats"}` line of a stopped observer.
pub fn final_stats(lines: &[Value]) -> &Value {
    lines
        .iter()
        .rev()
        .find(|v| v["type"] == "stats")
        .expect("a final stats line")
}

/// `major:minor` of the filesystem `dir` is on (as stats lines name filesystems).
pub fn mount_dev(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let d = std::fs::metadata(dir).expect("stat").dev();
    format!("{}:{}", libc::major(d), libc::minor(d))
}

/// Exact in-kernel failure count for (syscall, errno) on filesystem `dev` (`major:minor`):
/// calls the kernel resolved to that filesystem (fd-based or relative names), so nothing
/// another process did elsewhere is in it.
pub fn error_count_on(stats: &Value, syscall: &str, errno: u64, dev: &str) -> u64 {
    stats["errors"]
        .as_array()
        .expect("errors array")
        .iter()
        .filter(|e| e["syscall"] == syscall && e["errno"] == errno && e["dev"] == dev)
        .map(|e| e["count"].as_u64().unwrap())
        .sum()
}

/// Exact in-kernel failure count for (syscall, errno), all filesystems.
pub fn error_count(stats: &Value, syscall: &str, errno: u64) -> u64 {
    stats["errors"]
        .as_array()
        .expect("errors array")
        .iter()
        .filter(|e| e["syscall"] == syscall && e["errno"] == errno)
        .map(|e| e["count"].as_u64().unwrap())
        .sum()
}

/// The `deletes_by_process` row of `pid` in a stats line; panics (showing the stats) if absent.
pub fn delete_row(stats: &Value, pid: u64) -> Value {
    stats["deletes_by_process"]
        .as_array()
        .expect("deletes_by_process array")
        .iter()
        .find(|r| r["pid"] == pid)
        .cloned()
        .unwrap_or_else(|| panic!("pid {pid} not in deletes_by_process: {stats}"))
}
