//! Checks made before touching the kernel, each failing with one clear sentence.

/// Capabilities by number (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "insufficient privileges: need CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); missing {0} \
         — run as root or grant the capabilities"
    )]
    MissingCapabilities(String),
    #[error("cannot read /proc/self/status to check capabilities: {0}")]
    Proc(std::io::Error),
    #[error(
        "bpf() is refused (EPERM) although the capabilities are there: this process runs under a \
         seccomp filter that blocks it (container runtimes' default profiles allow bpf() and \
         perf_event_open() only with CAP_SYS_ADMIN) — run it with seccomp Unconfined or a profile \
         that allows both"
    )]
    SeccompBlocksBpf,
}

/// Whether this process runs under a seccomp filter (`Seccomp: 2`).
fn seccomp_filtered() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Seccomp:"))
                .map(|v| v.trim() == "2")
        })
        .unwrap_or(false)
}

/// Creates (and closes) a one-entry array map: the smallest bpf() call the capabilities allow.
/// EPERM under a seccomp filter is the filter's refusal, said in one sentence; any other
/// outcome is left to the loader, which names its own errors.
fn check_bpf_syscall() -> Result<(), PreflightError> {
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    let attr = MapCreate {
        map_type: 2, // BPF_MAP_TYPE_ARRAY
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_flags: 0,
    };
    // SAFETY: BPF_MAP_CREATE (0) with a valid attribute of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0,
            &raw const attr,
            size_of::<MapCreate>() as u32,
        )
    };
    if fd >= 0 {
        // SAFETY: a map fd we own.
        unsafe { libc::close(fd as i32) };
        return Ok(());
    }
    let errno = std::io::Error::last_os_error().raw_os_error();
    if errno == Some(libc::EPERM) && seccomp_filtered() {
        return Err(PreflightError::SeccompBlocksBpf);
    }
    Ok(())
}

/// Effective capability set of this process.
fn effective_caps() -> Result<u64, PreflightError> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(PreflightError::Proc)?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim)
        .unwrap_or("0");
    Ok(u64::from_str_radix(hex, 16).unwrap_or(0))
}

/// Fails unless this process may load and attach tracing programs.
pub fn check_privileges() -> Result<(), PreflightError> {
    let caps = effective_caps()?;
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return check_bpf_syscall();
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(c, _)| !has(*c))
        .map(|(_, n)| n)
        .collect();
    Err(PreflightError::MissingCapabilities(missing.join(", ")))
}
