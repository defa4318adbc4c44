//! Finding (and, if allowed, mounting) tracefs, and reading tracepoint formats.

use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

/// `TRACEFS_MAGIC` from linux/magic.h.
const TRACEFS_MAGIC: i64 = 0x74726163;
/// Where tracefs lives, in the order aya looks.
pub const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted at /sys/kernel/tracing or /sys/kernel/debug/tracing{0} \
         (mount it: `mount -t tracefs nodev /sys/kernel/tracing`; in Kubernetes, mount the host's \
         /sys/kernel/tracing)"
    )]
    Missing(String),
    #[error("cannot read tracepoint format {path}: {source}")]
    Format {
        path: String,
        source: std::io::Error,
    },
}

fn is_tracefs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == TRACEFS_MAGIC }
}

/// The mounted tracefs; mounts it at `/sys/kernel/tracing` when absent and `mount` is allowed.
pub fn find_or_mount(mount: bool) -> Result<PathBuf, TracefsError> {
    if let Some(p) = CANDIDATES.iter().map(Path::new).find(|p| is_tracefs(p)) {
        return Ok(p.to_path_buf());
    }
    if !mount {
        return Err(TracefsError::Missing(
            " and mounting it is disabled (mount_tracefs = false)".into(),
        ));
    }
    let target = Path::new(CANDIDATES[0]);
    match nix::mount::mount(
        Some("nodev"),
        target,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    ) {
        Ok(()) if is_tracefs(target) => {
            tracing::info!("mounted tracefs at {}", target.display());
            Ok(target.to_path_buf())
        }
        Ok(()) => Err(TracefsError::Missing(
            ", and mounting it did not produce a tracefs".into(),
        )),
        Err(e) => Err(TracefsError::Missing(format!(
            ", and mounting it failed: {e}"
        ))),
    }
}

/// Whether the tracepoint `category/name` exists.
pub fn exists(tracefs: &Path, category: &str, name: &str) -> bool {
    tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("id")
        .exists()
}

/// `(offset, size)` of field `field` in the tracepoint's `format` file.
pub fn field_offset(
    tracefs: &Path,
    category: &str,
    name: &str,
    field: &str,
) -> Result<Option<(usize, usize)>, TracefsError> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = fs::read_to_string(&path).map_err(|source| TracefsError::Format {
        path: path.display().to_string(),
        source,
    })?;
    Ok(parse_field(&text, field))
}

/// Parses `field:long ret;\toffset:16;\tsize:8;\tsigned:1;` lines.
pub fn parse_field(format: &str, field: &str) -> Option<(usize, usize)> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        if decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()?
            != field
        {
            return None;
        }
        let mut offset = None;
        let mut size = None;
        for p in parts {
            if let Some(v) = p.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = p.strip_prefix("size:") {
                size = v.parse().ok();
            }
        }
        Some((offset?, size?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS_EXIT_WRITE: &str = "name: sys_exit_write\nID: 801\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
        \tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;\n\nprint fmt: \"0x%lx\", REC->ret\n";

    #[test]
    fn parses_ret_field() {
        assert_eq!(parse_field(SYS_EXIT_WRITE, "ret"), Some((16, 8)));
        assert_eq!(parse_field(SYS_EXIT_WRITE, "__syscall_nr"), Some((8, 4)));
        assert_eq!(parse_field(SYS_EXIT_WRITE, "missing"), None);
        assert_eq!(
            parse_field("garbage\nfield:long ret;\toffset:x;", "ret"),
            None
        );
    }
}
