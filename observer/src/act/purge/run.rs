//! One purge run of one policy, on the planner thread: find matching entries, check them,
//! pick the oldest eligible up to the limits and the free-space target, then (executing)
//! re-check each right before moving it into the trash directory, from where the removal
//! threads delete it.

use std::{
    ffi::{OsStr, OsString},
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    PurgeItem, PurgeRun, Skip, TrashJob,
    inuse::InUse,
    policy::Policy,
    safefs,
    scan::{Kept, Scanner, TreeInfo, show},
};

/// A matched entry and the siblings of its group.
struct Candidate {
    parent: PathBuf,
    members: Vec<OsString>,
}

/// Everything a run needs from outside.
pub struct RunCtx<'a> {
    pub policy: &'a Policy,
    pub trash_name: &'a str,
    pub execute: bool,
    pub trigger: &'a str,
    pub requested_by: &'a str,
    pub run_id: u64,
    pub live_locks: Vec<String>,
    /// Hands a trashed entry to the removal threads.
    pub enqueue: &'a dyn Fn(TrashJob),
    /// Publishes one audit item as it is decided.
    pub audit: &'a dyn Fn(&PurgeItem),
}

pub fn run(ctx: &RunCtx<'_>) -> PurgeRun {
    let p = &ctx.policy.cfg;
    let mut out = PurgeRun::new(
        ctx.run_id,
        &p.name,
        (ctx.trigger, ctx.requested_by),
        ctx.execute,
        &p.root,
    );
    let root = match safefs::open_root(&p.root) {
        Ok(fd) => fd,
        Err(e) => {
            out.error = Some(format!("cannot open root {}: {e}", p.root.display()));
            return out.finish();
        }
    };
    match safefs::stat_fd(root.as_fd()) {
        Ok(st) if st.st_dev == ctx.policy.root_dev => {}
        Ok(_) => {
            out.error = Some("the root is now on another filesystem (remounted?)".into());
            return out.finish();
        }
        Err(e) => {
            out.error = Some(format!("fstat root: {e}"));
            return out.finish();
        }
    }
    let free = super::FreeSpace::of(&p.root);
    out.free_before = free;
    let inuse = InUse::scan(&[ctx.policy.root_dev], ctx.live_locks.clone());
    let scanner = Scanner {
        policy: ctx.policy,
        inuse: &inuse,
    };
    // 1. Candidates and their verdicts.
    let mut eligible: Vec<(Candidate, TreeInfo, Vec<TreeInfo>)> = Vec::new();
    let now = super::unix_now();
    for c in discover(root.as_fd(), ctx.policy, ctx.trash_name) {
        let item = |action, skip: Option<Kept>, info: Option<&TreeInfo>| {
            ctx.item(&c, action, skip, info, now)
        };
        match check(&scanner, root.as_fd(), &c) {
            Err(kept) => out.push(item("skipped", Some(kept), None), ctx.audit),
            Ok((total, parts)) => {
                let age = now - total.newest;
                if age < p.min_age_secs as i64 {
                    let why = (
                        Skip::TooYoung,
                        format!("changed {age}s ago (min_age_secs {})", p.min_age_secs),
                    );
                    out.push(item("skipped", Some(why), Some(&total)), ctx.audit);
                } else {
                    eligible.push((c, total, parts));
                }
            }
        }
    }
    // 2. Oldest first, within the limits and up to the target.
    eligible.sort_by_key(|(_, t, _)| t.newest);
    let (need_bytes, mut need_inodes) =
        free.map_or((u64::MAX, u64::MAX), |f| f.needed(p.target_free_percent));
    // A run that must still make the trash directory (none could be made at start-up: the
    // filesystem was already out of inodes) spends one of the inodes it frees on it.
    if ctx.execute
        && matches!(
            safefs::open_trash(root.as_fd(), OsStr::new(ctx.trash_name), false),
            Ok(None)
        )
    {
        need_inodes = need_inodes.saturating_add(1);
    }
    let (mut bytes, mut inodes, mut taken) = (0u64, 0u64, 0usize);
    let inuse_now = if ctx.execute {
        // Re-checked right before deleting: a fresh view of open files, locks and mounts.
        InUse::scan(&[ctx.policy.root_dev], ctx.live_locks.clone())
    } else {
        InUse::default()
    };
    for (c, total, _) in eligible {
        let reached = p.target_free_percent > 0.0 && bytes >= need_bytes && inodes >= need_inodes;
        let over = taken >= p.max_items || (p.max_bytes > 0 && bytes + total.bytes > p.max_bytes);
        if reached || over {
            let why = if reached {
                (
                    Skip::TargetReached,
                    format!("free-space target {}% reached", p.target_free_percent),
                )
            } else {
                (
                    Skip::Limit,
                    format!(
                        "max_items {} / max_bytes {} reached",
                        p.max_items, p.max_bytes
                    ),
                )
            };
            out.push(
                ctx.item(&c, "skipped", Some(why), Some(&total), now),
                ctx.audit,
            );
            continue;
        }
        if !ctx.execute {
            taken += 1;
            bytes += total.bytes;
            inodes += total.entries;
            out.push(
                ctx.item(&c, "would-delete", None, Some(&total), now),
                ctx.audit,
            );
            continue;
        }
        let scanner = Scanner {
            policy: ctx.policy,
            inuse: &inuse_now,
        };
        match execute(ctx, &scanner, root.as_fd(), &c, now) {
            Ok((total, note)) => {
                taken += 1;
                bytes += total.bytes;
                inodes += total.entries;
                let mut it = ctx.item(&c, "deleted", None, Some(&total), now);
                if let Some(n) = note {
                    it.reason.push_str("; ");
                    it.reason.push_str(&n);
                }
                out.push(it, ctx.audit);
            }
            Err(kept) => out.push(ctx.item(&c, "skipped", Some(kept), None, now), ctx.audit),
        }
    }
    out.finish()
}

impl RunCtx<'_> {
    fn item(
        &self,
        c: &Candidate,
        action: &'static str,
        skip: Option<Kept>,
        info: Option<&TreeInfo>,
        now: i64,
    ) -> PurgeItem {
        let p = &self.policy.cfg;
        let abs = p.root.join(&c.parent).join(&c.members[0]);
        let reason = match (&skip, info) {
            (Some((_, detail)), _) => detail.clone(),
            (None, Some(t)) => format!(
                "matched {:?}, unchanged for {}s (min_age_secs {})",
                p.matches,
                now - t.newest,
                p.min_age_secs
            ),
            (None, None) => String::new(),
        };
        PurgeItem {
            r#type: "purge",
            run_id: self.run_id,
            time_unix_ns: crate::node::clock::now_unix_ns(),
            policy: p.name.clone(),
            trigger: self.trigger.to_string(),
            requested_by: self.requested_by.to_string(),
            mode: if self.execute { "execute" } else { "dry-run" },
            path: abs.display().to_string(),
            group: c.members[1..].iter().map(|m| show(m)).collect(),
            action,
            skip: skip.as_ref().map(|(s, _)| s.as_str()),
            reason,
            bytes: info.map_or(0, |t| t.bytes),
            entries: info.map_or(0, |t| t.entries),
            age_secs: info.map(|t| (now - t.newest).max(0) as u64),
        }
    }
}

/// Entries matching the policy's globs (not descending into matches, symlinks, other mounts or
/// the trash directory), grouped with their siblings.
fn discover(root: BorrowedFd<'_>, policy: &Policy, trash: &str) -> Vec<Candidate> {
    let depth = policy
        .cfg
        .matches
        .iter()
        .map(|m| m.split('/').count())
        .max()
        .unwrap_or(1);
    let mut found: Vec<(PathBuf, OsString)> = Vec::new();
    find(root, Path::new(""), depth, policy, trash, &mut found);
    found.sort();
    let mut out: Vec<Candidate> = Vec::new();
    let mut consumed: std::collections::HashSet<(PathBuf, OsString)> = Default::default();
    // `found` is sorted, so entries of one parent are adjacent: one open per parent.
    let mut dir: Option<(&Path, Option<OwnedFd>)> = None;
    let mut groups: Vec<Vec<OsString>> = Vec::with_capacity(found.len());
    for (parent, name) in &found {
        if policy.cfg.group.is_empty() {
            groups.push(Vec::new());
            continue;
        }
        if dir.as_ref().is_none_or(|(p, _)| *p != parent.as_path()) {
            dir = Some((parent, safefs::open_rel(root, parent).ok()));
        }
        let fd = dir.as_ref().and_then(|(_, fd)| fd.as_ref());
        groups.push(
            policy
                .cfg
                .group
                .iter()
                .map(|g| OsString::from(g.replace("{}", &name.to_string_lossy())))
                .filter(|m| fd.is_some_and(|d| safefs::lstat_at(d.as_fd(), m).is_ok()))
                .collect(),
        );
    }
    for ((parent, _), g) in found.iter().zip(&groups) {
        for m in g {
            consumed.insert((parent.clone(), m.clone()));
        }
    }
    for ((parent, name), g) in found.into_iter().zip(groups) {
        if consumed.contains(&(parent.clone(), name.clone())) {
            continue; // a sibling in another entry's group goes with that entry
        }
        let mut members = vec![name];
        members.extend(g);
        out.push(Candidate { parent, members });
    }
    out
}

fn find(
    dir: BorrowedFd<'_>,
    rel: &Path,
    depth: usize,
    policy: &Policy,
    trash: &str,
    out: &mut Vec<(PathBuf, OsString)>,
) {
    let Ok(names) = safefs::list(dir) else { return };
    for name in names {
        // The trash directory, and entries renamed in place when it could not be made.
        if name.to_string_lossy().starts_with(trash) {
            continue;
        }
        let path = rel.join(&name);
        if policy.matcher.is_match(&path) {
            out.push((rel.to_path_buf(), name));
            continue;
        }
        if path.components().count() >= depth {
            continue;
        }
        if let Ok(st) = safefs::lstat_at(dir, &name)
            && safefs::is_dir(&st)
            && st.st_dev == policy.root_dev
            && let Ok(sub) = safefs::open_dir(dir, &name)
        {
            find(sub.as_fd(), &path, depth, policy, trash, out);
        }
    }
}

/// Scans every member of a candidate: the total, and each member's info.
fn check(
    scanner: &Scanner<'_>,
    root: BorrowedFd<'_>,
    c: &Candidate,
) -> Result<(TreeInfo, Vec<TreeInfo>), Kept> {
    let dir = safefs::open_rel(root, &c.parent)
        .map_err(|e| (Skip::Changed, format!("parent directory: {e}")))?;
    let base = scanner.policy.cfg.root.join(&c.parent);
    let mut total = TreeInfo::default();
    let mut parts = Vec::new();
    for m in &c.members {
        let info = scanner.entry(dir.as_fd(), m, &base.join(m))?;
        total.bytes += info.bytes;
        total.entries += info.entries;
        total.newest = total.newest.max(info.newest);
        parts.push(info);
    }
    Ok((total, parts))
}

/// Re-checks the candidate and moves every member into the trash (all or none).
fn execute(
    ctx: &RunCtx<'_>,
    scanner: &Scanner<'_>,
    root: BorrowedFd<'_>,
    c: &Candidate,
    now: i64,
) -> Result<(TreeInfo, Option<String>), Kept> {
    let p = &ctx.policy.cfg;
    let (total, parts) = check(scanner, root, c)?;
    let age = now - total.newest;
    if age < p.min_age_secs as i64 {
        return Err((
            Skip::TooYoung,
            format!("changed {age}s ago, since it was selected"),
        ));
    }
    let dir = safefs::open_rel(root, &c.parent)
        .map_err(|e| (Skip::Changed, format!("parent directory: {e}")))?;
    // The trash directory needs an inode; on a filesystem with none left the entries are
    // renamed in place instead (a rename within a directory needs no new inode).
    let (trash, prefix) = match safefs::open_trash(root, OsStr::new(ctx.trash_name), true) {
        Ok(Some(fd)) => (fd, String::new()),
        Err(safefs::TrashError::Sys(nix::errno::Errno::ENOSPC | nix::errno::Errno::EDQUOT)) => (
            nix::unistd::dup(dir.as_fd()).map_err(|e| (Skip::Error, format!("dup: {e}")))?,
            format!("{}-", ctx.trash_name),
        ),
        Ok(None) => return Err((Skip::Error, "trash directory: missing".into())),
        Err(e) => return Err((Skip::Error, format!("trash directory: {e}"))),
    };
    let trash = Arc::new(trash);
    let mut moved: Vec<(OsString, OsString)> = Vec::new();
    for (i, (m, info)) in c.members.iter().zip(&parts).enumerate() {
        let tname = OsString::from(format!(
            "{prefix}{}-{}-{}",
            ctx.run_id,
            i,
            m.to_string_lossy()
        ));
        let result = safefs::move_noreplace(dir.as_fd(), m, trash.as_fd(), &tname)
            .map_err(|e| (Skip::Error, format!("rename into trash: {e}")))
            .and_then(|()| {
                // The entry moved must be the one checked (not a symlink swapped in between).
                match safefs::lstat_at(trash.as_fd(), &tname) {
                    Ok(st) if (st.st_dev, st.st_ino) == info.ino && !safefs::is_symlink(&st) => {
                        Ok(())
                    }
                    _ => {
                        moved.push((m.clone(), tname.clone()));
                        Err((
                            Skip::Changed,
                            format!("{} was replaced before it was moved", show(m)),
                        ))
                    }
                }
            });
        match result {
            Ok(()) => moved.push((m.clone(), tname)),
            Err(kept) => {
                rollback(dir.as_fd(), trash.as_fd(), &moved, ctx.run_id);
                return Err(kept);
            }
        }
    }
    for ((_, tname), info) in moved.iter().zip(&parts) {
        (ctx.enqueue)(TrashJob {
            trash: trash.clone(),
            name: tname.clone(),
            bytes: info.bytes,
        });
    }
    let note = parts
        .iter()
        .find_map(|i| i.git_admin.as_ref())
        .map(|admin| {
            let worktree = p.root.join(&c.parent).join(&c.members[0]);
            prune_admin(ctx, scanner, root, trash.clone(), admin, &worktree)
        });
    Ok((total, note))
}

/// Moves a deleted worktree's admin entry into the trash when it is the worktree's own (see
/// [`super::worktree::admin_entry`]) and passes every check an entry passes (age, open files,
/// locks, mounts); says what was done or why the entry was left.
fn prune_admin(
    ctx: &RunCtx<'_>,
    scanner: &Scanner<'_>,
    root: BorrowedFd<'_>,
    trash: Arc<OwnedFd>,
    admin: &Path,
    worktree: &Path,
) -> String {
    let p = &ctx.policy.cfg;
    let (dir, name) = match super::worktree::admin_entry(root, &p.root, admin, worktree) {
        Ok(found) => found,
        Err(left) => return left,
    };
    match scanner.entry(dir.as_fd(), &name, admin) {
        Err((_, why)) => return format!("git admin entry {} kept: {why}", admin.display()),
        Ok(info) => {
            let age = super::unix_now() - info.newest;
            if age < p.min_age_secs as i64 {
                return format!(
                    "git admin entry {} kept: changed {age}s ago (min_age_secs {})",
                    admin.display(),
                    p.min_age_secs
                );
            }
        }
    }
    let tname = OsString::from(format!("{}-git-{}", ctx.run_id, name.to_string_lossy()));
    match safefs::move_noreplace(dir.as_fd(), &name, trash.as_fd(), &tname) {
        Ok(()) => {
            (ctx.enqueue)(TrashJob {
                trash,
                name: tname,
                bytes: 0,
            });
            format!("git admin entry {} pruned", admin.display())
        }
        Err(e) => format!("git admin entry {} not pruned: {e}", admin.display()),
    }
}

/// Moves entries back after a group could not be moved whole. What cannot go back (its name was
/// taken meanwhile) stays in the trash under a `quarantine-` name the removal never touches.
fn rollback(
    dir: BorrowedFd<'_>,
    trash: BorrowedFd<'_>,
    moved: &[(OsString, OsString)],
    run_id: u64,
) {
    for (i, (orig, tname)) in moved.iter().enumerate() {
        if safefs::move_noreplace(trash, tname, dir, orig).is_err() {
            let q = OsString::from(format!(
                "quarantine-{run_id}-{i}-{}",
                orig.to_string_lossy()
            ));
            let _: Result<_, _> = safefs::move_noreplace(trash, tname, trash, &q);
            tracing::warn!(entry = %show(orig), "purge: could not move an entry back; kept in the trash as {}", show(&q));
        }
    }
}
