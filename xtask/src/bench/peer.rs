//! The peer column: `peer.bt`, run by bpftrace from Debian's packages, in the same alternating
//! rounds as the observer. What a user would reach for instead, doing less (see the script).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

/// The script, kept in the repository beside this file.
pub const SCRIPT: &str = include_str!("peer.bt");

/// A running `bpftrace peer.bt`; stopped (SIGINT, then waited for) on drop.
pub struct Peer {
    child: Child,
    _script: tempfile::NamedTempFile,
}

/// Installs bpftrace when it is missing.
pub fn ensure() -> anyhow::Result<()> {
    crate::test::vm::ensure_host_packages(&[("/usr/bin/bpftrace", "bpftrace")])
}

impl Peer {
    /// Starts the script and returns once its probes are attached (its `BEGIN` line).
    pub fn start() -> anyhow::Result<Peer> {
        let mut script = tempfile::Builder::new()
            .prefix("fsobs-peer-")
            .suffix(".bt")
            .tempfile()?;
        script.write_all(SCRIPT.as_bytes())?;
        let mut child = Command::new("bpftrace")
            .arg(script.path())
            .env("BPFTRACE_STRLEN", "16")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run bpftrace")?;
        let stdout = child.stdout.take().context("bpftrace stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut peer = Peer {
            child,
            _script: script,
        };
        loop {
            match lines.next() {
                Some(Ok(l)) if l.trim() == "ready" => break,
                Some(Ok(_)) => {}
                _ => {
                    let mut err = String::new();
                    if let Some(mut e) = peer.child.stderr.take() {
                        let _: Result<_, _> = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    bail!("bpftrace did not start: {}", err.trim());
                }
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        if let Some(e) = peer.child.stderr.take() {
            std::thread::spawn(move || BufReader::new(e).lines().for_each(drop));
        }
        std::thread::sleep(Duration::from_millis(100));
        Ok(peer)
    }
}

impl Peer {
    /// The bpftrace process (it holds the script's programs).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child; SIGINT runs the script's END and detaches.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _: Result<_, _> = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use observer_common::syscall::{SYS_EXIT_FIRST, SYS_EXIT_LAST, name};

    /// The peer attaches to exactly the observer's `sys_exit` tracepoints: same hooks, less work.
    #[test]
    fn the_peer_probes_the_observers_tracepoints() {
        let mut probed: Vec<&str> = super::SCRIPT
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter_map(|w| w.strip_prefix("tracepoint:syscalls:sys_exit_"))
            .collect();
        probed.sort_unstable();
        let mut ours: Vec<&str> = (SYS_EXIT_FIRST..=SYS_EXIT_LAST).map(name).collect();
        ours.sort_unstable();
        assert_eq!(probed, ours);
    }
}
