//! Purge policies: the `[purge]` section of the configuration and its safety checks. A bad purge
//! section never stops observation: the daemon runs with purge disabled and says why.

use std::path::{Component, Path, PathBuf};

pub use crate::config::purge::{PolicyConfig, PurgeSection};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("purge: {0}")]
    Invalid(String),
    #[error("purge policy {policy:?}: {msg}")]
    Policy { policy: String, msg: String },
}

/// Which timestamp ages an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgeFrom {
    Mtime,
    Ctime,
}

/// A checked policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub cfg: PolicyConfig,
    pub matcher: globset::GlobSet,
    pub age_from: AgeFrom,
    /// `st_dev` of the root (nothing on another filesystem is touched).
    pub root_dev: u64,
}

/// The checked purge section.
#[derive(Clone, Debug)]
pub struct Purge {
    pub section: PurgeSection,
    pub policies: Vec<Policy>,
}

/// Checks every policy; `Ok(None)` when purge is disabled.
pub fn check(section: &PurgeSection) -> Result<Option<Purge>, PolicyError> {
    if !section.enabled {
        return Ok(None);
    }
    if section.policies.is_empty() {
        return Err(PolicyError::Invalid(
            "enabled with no policies: add a [[purge.policies]] table or set purge.enabled = false"
                .into(),
        ));
    }
    check_name("purge.trash_dir", &section.trash_dir)?;
    if section.workers == 0 || section.workers > 64 {
        return Err(PolicyError::Invalid(
            "workers must be between 1 and 64".into(),
        ));
    }
    let mut policies: Vec<Policy> = Vec::new();
    for p in &section.policies {
        let checked = check_policy(p, &section.trash_dir)?;
        if policies.iter().any(|q| q.cfg.name == p.name) {
            return Err(policy_err(p, "a policy of that name exists already"));
        }
        policies.push(checked);
    }
    Ok(Some(Purge {
        section: section.clone(),
        policies,
    }))
}

fn policy_err(p: &PolicyConfig, msg: impl Into<String>) -> PolicyError {
    PolicyError::Policy {
        policy: p.name.clone(),
        msg: msg.into(),
    }
}

fn check_name(what: &str, name: &str) -> Result<(), PolicyError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(PolicyError::Invalid(format!(
            "{what} = {name:?}: must be a plain directory name"
        )));
    }
    Ok(())
}

fn check_policy(p: &PolicyConfig, trash: &str) -> Result<Policy, PolicyError> {
    use std::os::unix::fs::MetadataExt as _;
    if p.name.is_empty()
        || !p
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(policy_err(
            p,
            "name must be non-empty letters, digits, '-' or '_' (it is a metric label)",
        ));
    }
    check_root(&p.root).map_err(|m| policy_err(p, format!("root {}: {m}", p.root.display())))?;
    if p.min_age_secs == 0 {
        return Err(policy_err(
            p,
            "min_age_secs must be > 0 (a TTL of 0 would delete entries still being written)",
        ));
    }
    if p.matches.is_empty() {
        return Err(policy_err(p, "match is empty: nothing to select"));
    }
    let mut b = globset::GlobSetBuilder::new();
    for m in &p.matches {
        let bad = m.is_empty()
            || m.starts_with('/')
            || m.split('/').any(|c| c == ".." || c == "." || c.is_empty())
            || m.contains("**")
            || m.split('/').next() == Some(trash);
        if bad {
            return Err(policy_err(
                p,
                format!(
                    "match {m:?}: must be relative to the root, without '..', '.', '**', empty \
                     components or the trash directory"
                ),
            ));
        }
        let glob = globset::GlobBuilder::new(m)
            .literal_separator(true)
            .build()
            .map_err(|e| policy_err(p, format!("match {m:?}: {}", e.kind())))?;
        b.add(glob);
    }
    let matcher = b
        .build()
        .map_err(|e| policy_err(p, format!("match: {e}")))?;
    for g in &p.group {
        if !g.contains("{}") || g.contains('/') || g == "{}" {
            return Err(policy_err(
                p,
                format!(
                    "group {g:?}: a sibling name containing {{}} (the entry's name) and no '/'"
                ),
            ));
        }
    }
    let age_from = match p.age_from.as_str() {
        "mtime" => AgeFrom::Mtime,
        "ctime" => AgeFrom::Ctime,
        other => return Err(policy_err(p, format!("age_from {other:?}: mtime or ctime"))),
    };
    if p.max_items == 0 {
        return Err(policy_err(p, "max_items must be at least 1"));
    }
    if !(0.0..=100.0).contains(&p.target_free_percent) {
        return Err(policy_err(
            p,
            "target_free_percent must be between 0 and 100",
        ));
    }
    if p.auto && !p.trigger.is_set() {
        return Err(policy_err(
            p,
            "auto = true but no trigger is set (errors_per_min, free_below_percent, \
             inodes_below_percent or time_to_full_below_secs)",
        ));
    }
    let root_dev = crate::node::fsio::within(&p.root, crate::node::fsio::FS_TIMEOUT, |r| {
        std::fs::symlink_metadata(r)
    })
    .map_err(|e| policy_err(p, format!("root {}: {e}", p.root.display())))?
    .dev();
    if p.execute {
        check_trash(p, trash)?;
    }
    Ok(Policy {
        cfg: p.clone(),
        matcher,
        age_from,
        root_dev,
    })
}

/// An existing trash directory under a deleting policy's root must be purge's own.
fn check_trash(p: &PolicyConfig, trash: &str) -> Result<(), PolicyError> {
    use std::os::fd::AsFd as _;
    let root = super::safefs::open_root(&p.root)
        .map_err(|e| policy_err(p, format!("root {}: {e}", p.root.display())))?;
    super::safefs::open_trash(root.as_fd(), std::ffi::OsStr::new(trash), false)
        .map(drop)
        .map_err(|e| {
            policy_err(
                p,
                format!("trash directory {}: {e}", p.root.join(trash).display()),
            )
        })
}

/// A root must be absolute, normalised, not `/`, an existing directory, and reached without
/// any symlink (each component is checked, not only the last).
fn check_root(root: &Path) -> Result<(), String> {
    if root.as_os_str().is_empty() {
        return Err("empty".into());
    }
    if !root.is_absolute() {
        return Err("must be absolute".into());
    }
    let mut depth = 0;
    for c in root.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(_) => depth += 1,
            _ => return Err("must not contain '.' or '..'".into()),
        }
    }
    if depth == 0 {
        return Err("the filesystem root is never a purge root".into());
    }
    let mut at = PathBuf::from("/");
    for c in root.components().skip(1) {
        at.push(c);
        let meta = crate::node::fsio::within(&at, crate::node::fsio::FS_TIMEOUT, |a| {
            std::fs::symlink_metadata(a)
        })
        .map_err(|e| format!("{}: {e}", at.display()))?;
        if meta.file_type().is_symlink() {
            return Err(format!(
                "{} is a symlink (roots are used as written)",
                at.display()
            ));
        }
    }
    if !std::fs::symlink_metadata(root)
        .map_err(|e| e.to_string())?
        .is_dir()
    {
        return Err("not a directory".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(root: &str, extra: &str) -> PurgeSection {
        let text = format!(
            "enabled = true\n[[policies]]\nname = \"p\"\nroot = \"{root}\"\nmatch = [\"w/*\"]\n\
             min_age_secs = 60\n{extra}"
        );
        toml::from_str(&text).unwrap()
    }

    fn err(root: &str, extra: &str) -> String {
        check(&section(root, extra)).unwrap_err().to_string()
    }

    #[test]
    fn hostile_roots_and_policies_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let ok = d.path().to_str().unwrap();
        assert!(check(&section(ok, "")).unwrap().is_some());
        assert!(err("/", "").contains("filesystem root"), "{}", err("/", ""));
        assert!(err("", "").contains("empty"));
        assert!(err("relative/dir", "").contains("absolute"));
        assert!(err(&format!("{ok}/../x"), "").contains("'..'"));
        let link = d.path().join("link");
        std::os::unix::fs::symlink(d.path(), &link).unwrap();
        let e = err(link.to_str().unwrap(), "");
        assert!(e.contains("symlink"), "{e}");
        let e = check(&section(ok, "")).map(|_| ());
        assert!(e.is_ok());
        let mut ttl0 = section(ok, "");
        ttl0.policies[0].min_age_secs = 0;
        assert!(
            check(&ttl0)
                .unwrap_err()
                .to_string()
                .contains("min_age_secs")
        );
        let none: PurgeSection = toml::from_str("enabled = true").unwrap();
        assert!(
            check(&none)
                .unwrap_err()
                .to_string()
                .contains("no policies")
        );
        assert!(err(ok, "group = [\"x\"]").contains("group"));
        assert!(err(ok, "auto = true").contains("no trigger"));
        let mut m = section(ok, "");
        m.policies[0].matches = vec!["../x".into()];
        assert!(check(&m).unwrap_err().to_string().contains("'..'"));
        m.policies[0].matches = vec![".fsobserver-trash/*".into()];
        assert!(check(&m).unwrap_err().to_string().contains("trash"));
        let off: PurgeSection = toml::from_str("enabled = false").unwrap();
        assert!(check(&off).unwrap().is_none());
    }
}
