//! Errno names (`ENOSPC`) and parsing of names or numbers, via nix.

use nix::errno::Errno;

/// No space left on the device: the failure this observer exists for.
pub const ENOSPC: u32 = 28;
/// Disk quota exceeded: the same failure under a quota.
pub const EDQUOT: u32 = 122;

/// `"ENOSPC"` for 28; `"E<n>"` for numbers this platform does not name.
pub fn name(errno: u32) -> String {
    match Errno::from_raw(errno as i32) {
        Errno::UnknownErrno => format!("E{errno}"),
        e => format!("{e:?}"),
    }
}

/// The same as [`name`], without allocating for the errnos the kernel returns (hot paths).
pub fn name_static(errno: u32) -> std::borrow::Cow<'static, str> {
    static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| (0..4096).map(name).collect());
    match names.get(errno as usize) {
        Some(n) => std::borrow::Cow::Borrowed(n.as_str()),
        None => std::borrow::Cow::Owned(name(errno)),
    }
}

/// Parses `ENOSPC`, `enospc` or `28`.
pub fn parse(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u32>() {
        return (n > 0 && n < 4096).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    (1..4096u32).find(|&n| Errno::from_raw(n as i32) != Errno::UnknownErrno && name(n) == upper)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_and_parse_round_trip() {
        assert_eq!(super::name(28), "ENOSPC");
        assert_eq!(super::name(122), "EDQUOT");
        assert_eq!(super::name(3999), "E3999");
        assert_eq!(super::name_static(28), "ENOSPC");
        assert_eq!(super::name_static(5000), "E5000");
        assert_eq!(super::parse("ENOSPC"), Some(28));
        assert_eq!(super::parse("edquot"), Some(122));
        assert_eq!(super::parse("30"), Some(30));
        assert_eq!(super::parse("ENOTANERRNO"), None);
        assert_eq!(super::parse("0"), None);
    }
}
