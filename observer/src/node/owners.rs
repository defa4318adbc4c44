//! Lock and pid files that name their owner: which files do, and whether the process a file
//! names is alive. Read by purge (never remove what a live process owns) and by the report
//! (pid files naming a dead owner).

/// The pid a lock/pid file names: its first token, decimal, leading the file (after
/// whitespace); not 0.
pub fn named_pid(content: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(content).ok()?;
    let token = text
        .split(|c: char| !c.is_ascii_digit())
        .find(|t| !t.is_empty())?;
    if !text.trim_start().starts_with(token) {
        return None;
    }
    token.parse().ok().filter(|&p: &u32| p != 0)
}

/// Whether process `pid` is alive (a zombie is not).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    state != Some("Z")
}

/// The pid a lock/pid file names, if that process is alive.
pub fn live_pid_in(content: &[u8]) -> Option<u32> {
    named_pid(content).filter(|&p| alive(p))
}

/// Whether a file name marks a lock or pid file whose content may name its owner.
pub fn is_owner_file(name: &[u8]) -> bool {
    name.ends_with(b".lock") || name.ends_with(b".pid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pids_must_be_alive_and_lead_the_file() {
        let me = std::process::id();
        assert_eq!(live_pid_in(format!("{me}\n").as_bytes()), Some(me));
        assert_eq!(live_pid_in(format!("  {me} host-a").as_bytes()), Some(me));
        assert_eq!(live_pid_in(b"host 123"), None);
        assert_eq!(live_pid_in(b"0"), None);
        assert_eq!(live_pid_in(b"4194999"), None, "no such pid");
    }
}
