//! What the running kernel allows, independently of the observer: BTF-typed fexit, its version,
//! and which of our programs are loaded.

/// The probe mode an observer started by these tests runs in: the mode forced through
/// `OBSERVER_PROBE_MODE` (the VM cells force one), else what `auto` picks on this kernel —
/// fexit where the kernel allows BPF trampolines ([`kernel_allows_fexit`]), tracepoints
/// otherwise.
pub fn expected_mode() -> String {
    match std::env::var("OBSERVER_PROBE_MODE") {
        Ok(m) if m != "auto" && !m.is_empty() => m,
        _ if kernel_allows_fexit() => "fexit".into(),
        _ => "tracepoint".into(),
    }
}

/// Whether the tests run inside a `cargo xtask vm-test` guest (software emulation: slower, so
/// some workloads are smaller there).
pub fn in_vm() -> bool {
    std::env::var_os("OBSERVER_IN_VM").is_some()
}

/// Whether this kernel accepts an fexit program on `vfs_write`: loads a two-instruction program
/// with a raw `bpf(2)` call (independently of the observer) and closes it. Some kernels refuse
/// trampolines (EPERM at load), e.g. under lockdown. Not attached: detaching a trampoline waits
/// for an RCU-tasks grace period (seconds under emulation).
pub fn kernel_allows_fexit() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(fexit_probe::try_attach)
}

mod fexit_probe {
    use std::os::fd::{FromRawFd as _, OwnedFd};

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_TRACING: u32 = 26;
    const BPF_TRACE_FEXIT: u32 = 25;

    fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> i64 {
        // SAFETY: bpf(2) with a zero-padded attribute buffer of the size we pass.
        unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr.as_mut_ptr(),
                attr.len() as libc::c_uint,
            )
        }
    }

    fn put<const N: usize>(attr: &mut [u8; 128], off: usize, v: [u8; N]) {
        attr[off..off + N].copy_from_slice(&v);
    }

    pub fn try_attach() -> bool {
        let Ok(btf) = btf_rs::Btf::from_file("/sys/kernel/btf/vmlinux") else {
            return false;
        };
        let Some(id) = btf.resolve_ids_by_name("vfs_write").ok().and_then(|ids| {
            ids.into_iter()
                .find(|id| matches!(btf.resolve_type_by_id(*id), Ok(btf_rs::Type::Func(_))))
        }) else {
            return false;
        };
        // r0 = 0; exit
        let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
        let license = b"GPL\0";
        let mut attr = [0u8; 128];
        put(&mut attr, 0, BPF_PROG_TYPE_TRACING.to_ne_bytes()); // prog_type
        put(&mut attr, 4, 2u32.to_ne_bytes()); // insn_cnt
        put(&mut attr, 8, (insns.as_ptr() as u64).to_ne_bytes()); // insns
        put(&mut attr, 16, (license.as_ptr() as u64).to_ne_bytes()); // license
        put(&mut attr, 68, BPF_TRACE_FEXIT.to_ne_bytes()); // expected_attach_type
        put(&mut attr, 108, id.to_ne_bytes()); // attach_btf_id
        // Before 5.11 a BPF program is charged to the user's locked memory: while an observer
        // holds its ring buffer, root's RLIMIT_MEMLOCK is used up and the load fails with EPERM
        // whatever the kernel allows (seen on 5.10). Lift the limit as the observer's loader does.
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit with a valid struct; failure leaves the limit as it was.
        let _: libc::c_int = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
        let prog = bpf(BPF_PROG_LOAD, &mut attr);
        if prog < 0 {
            return false;
        }
        // SAFETY: a new fd the kernel gave us; closing it unloads the program.
        drop(unsafe { OwnedFd::from_raw_fd(prog as i32) });
        true
    }
}

/// Panics unless running as root (these tests load BPF programs and mount filesystems).
pub fn require_root() {
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "integration tests need root (they load BPF programs and mount filesystems)"
    );
}

/// Ids of the kernel's loaded BPF programs whose name starts with `fso_` (ours).
pub fn loaded_observer_programs() -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("fso_")))
        .map(|p| p.id())
        .collect()
}

/// Ids of the BPF programs process `pid` holds (program and link fds: `prog_id` in each fd's
/// `/proc/PID/fdinfo`): that observer's own, whatever other observers run beside it.
pub fn programs_held_by(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for e in dir.flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for l in text.lines() {
            if let Some(v) = l.strip_prefix("prog_id:")
                && let Ok(id) = v.trim().parse::<u32>()
                && !ids.contains(&id)
            {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    ids
}

/// Whether the running kernel is at least `major.minor`.
pub fn kernel_at_least(major: u64, minor: u64) -> bool {
    let uts = nix::sys::utsname::uname().expect("uname");
    let release = uts.release().to_string_lossy().into_owned();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u64>().ok());
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    version >= (major, minor)
}
