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
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(c, _)| !has(*c))
        .map(|(_, n)| n)
        .collect();
    Err(PreflightError::MissingCapabilities(missing.join(", ")))
}
