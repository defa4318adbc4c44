//! The machine guard: what a test run may not change on the machine it runs on. A snapshot
//! before the run and one after; any difference fails the run, named.
//!
//! Watched: `/tmp`'s mode (1777, sticky and world-writable: other users' temporary files live
//! there), the mount table, network namespaces, loop devices, BPF programs of ours (`fso_*`)
//! and BPF links, podman containers, top-level cgroups, leftover processes of the project's binaries, and
//! `/tmp/fsobs-*` and `/var/lib/fsobs-*` entries the tests make.

use std::{collections::BTreeSet, os::unix::fs::PermissionsExt as _, path::Path};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    tmp_mode: u32,
    mounts: BTreeSet<String>,
    netns: BTreeSet<String>,
    loops: BTreeSet<String>,
    bpf_programs: BTreeSet<String>,
    bpf_links: usize,
    containers: BTreeSet<String>,
    cgroups: BTreeSet<String>,
    processes: BTreeSet<String>,
    tmp_entries: BTreeSet<String>,
}

/// Mount points (with their source) of this mount namespace.
fn mounts() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some(format!(
                "{} ({} {})",
                f.get(4)?,
                f.get(sep + 1)?,
                f.get(sep + 2)?
            ))
        })
        .collect()
}

fn dir_names(dir: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Attached loop devices (`/sys/block/loopN/loop/backing_file`).
fn loops() -> BTreeSet<String> {
    dir_names("/sys/block")
        .into_iter()
        .filter(|n| n.starts_with("loop"))
        .filter_map(|n| {
            let f = std::fs::read_to_string(format!("/sys/block/{n}/loop/backing_file")).ok()?;
            Some(format!("{n} -> {}", f.trim()))
        })
        .collect()
}

fn bpf() -> (BTreeSet<String>, usize) {
    let progs = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| {
            let name = p.name_as_str()?.to_string();
            name.starts_with("fso_")
                .then(|| format!("{name} (id {})", p.id()))
        })
        .collect();
    let links = aya::programs::loaded_links().filter_map(Result::ok).count();
    (progs, links)
}

fn containers() -> BTreeSet<String> {
    if !Path::new("/usr/bin/podman").exists() {
        return BTreeSet::new();
    }
    let out = std::process::Command::new("timeout")
        .args(["20", "podman", "ps", "-a", "--format", "{{.ID}} {{.Names}}"])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        _ => BTreeSet::from(["(podman ps failed)".to_string()]),
    }
}

/// Top-level cgroups the tests make (`fsobs-test-*`, podman's `libpod_parent`) in every
/// hierarchy (`hierarchy/name`; on a pure cgroup v2 host, the one at /sys/fs/cgroup): the
/// container tests make theirs and must remove them. Services' cgroups come and go on their own.
fn cgroups() -> BTreeSet<String> {
    let ours = |d: &str| d.starts_with("fsobs-test-") || d == "libpod_parent";
    let mut out = BTreeSet::new();
    let mut roots = vec![("".to_string(), "/sys/fs/cgroup".to_string())];
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        roots.extend(
            dir_names("/sys/fs/cgroup")
                .into_iter()
                .map(|h| (format!("{h}/"), format!("/sys/fs/cgroup/{h}"))),
        );
    }
    for (label, dir) in roots {
        for d in dir_names(&dir) {
            if ours(&d) && Path::new(&format!("{dir}/{d}")).is_dir() {
                out.insert(format!("{label}{d}"));
            }
        }
    }
    out
}

/// Running processes whose executable lies under `root` (the project's own binaries), but
/// not this xtask process and its ancestors.
fn processes(root: &Path) -> BTreeSet<String> {
    let me = std::process::id().to_string();
    dir_names("/proc")
        .into_iter()
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()) && *p != me)
        .filter_map(|p| {
            let exe = std::fs::read_link(format!("/proc/{p}/exe")).ok()?;
            if !exe.starts_with(root) || exe.ends_with("xtask") {
                return None;
            }
            Some(format!("{} (pid {p})", exe.display()))
        })
        .collect()
}

impl Snapshot {
    pub fn take(root: &Path) -> Snapshot {
        let tmp_mode = std::fs::metadata("/tmp")
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0);
        let (bpf_programs, bpf_links) = bpf();
        Snapshot {
            tmp_mode,
            mounts: mounts(),
            netns: dir_names("/run/netns"),
            loops: loops(),
            bpf_programs,
            bpf_links,
            containers: containers(),
            cgroups: cgroups(),
            processes: processes(root),
            tmp_entries: ["/tmp", "/var/lib"]
                .into_iter()
                .flat_map(|d| {
                    dir_names(d)
                        .into_iter()
                        .filter(|n| n.starts_with("fsobs-"))
                        .map(move |n| format!("{d}/{n}"))
                })
                .collect(),
        }
    }

    /// Problems with the machine as it is before a run (a run that starts on a broken
    /// machine says so, rather than blaming itself later).
    pub fn preexisting(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.tmp_mode != 0o1777 {
            v.push(format!(
                "/tmp is mode {:o}, not 1777 (something changed it before this run)",
                self.tmp_mode
            ));
        }
        if !self.bpf_programs.is_empty() {
            v.push(format!(
                "observer programs are loaded before the run: {:?}",
                self.bpf_programs
            ));
        }
        v
    }

    /// What changed between `self` (before) and `after`, one line per change.
    pub fn changes(&self, after: &Snapshot) -> Vec<String> {
        let mut v = Vec::new();
        if after.tmp_mode != 0o1777 || after.tmp_mode != self.tmp_mode {
            v.push(format!(
                "/tmp mode changed: {:o} -> {:o} (must stay 1777)",
                self.tmp_mode, after.tmp_mode
            ));
        }
        let sets = [
            ("mount", &self.mounts, &after.mounts),
            ("network namespace", &self.netns, &after.netns),
            ("loop device", &self.loops, &after.loops),
            (
                "observer BPF program",
                &self.bpf_programs,
                &after.bpf_programs,
            ),
            ("podman container", &self.containers, &after.containers),
            ("cgroup", &self.cgroups, &after.cgroups),
            ("process", &self.processes, &after.processes),
            ("test entry", &self.tmp_entries, &after.tmp_entries),
        ];
        for (what, before, now) in sets {
            for added in now.difference(before) {
                v.push(format!("{what} left behind: {added}"));
            }
            for gone in before.difference(now) {
                v.push(format!("{what} removed: {gone}"));
            }
        }
        if after.bpf_links > self.bpf_links {
            v.push(format!(
                "BPF links: {} before, {} after",
                self.bpf_links, after.bpf_links
            ));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_tmp_mode_and_a_leftover_mount_are_named() {
        let before = Snapshot {
            tmp_mode: 0o1777,
            mounts: BTreeSet::from(["/ (ext4 /dev/vda)".to_string()]),
            netns: BTreeSet::new(),
            loops: BTreeSet::new(),
            bpf_programs: BTreeSet::new(),
            bpf_links: 0,
            containers: BTreeSet::new(),
            cgroups: BTreeSet::new(),
            processes: BTreeSet::new(),
            tmp_entries: BTreeSet::new(),
        };
        assert!(before.changes(&before.clone()).is_empty());
        let mut after = before.clone();
        after.tmp_mode = 0o755;
        after
            .mounts
            .insert("/tmp/fsobs-x/mnt (tmpfs fsobs-test)".into());
        after.bpf_links = 3;
        let c = after.changes(&after);
        assert_eq!(c.len(), 1, "a non-1777 /tmp is always a change: {c:?}");
        let c = before.changes(&after);
        assert_eq!(c.len(), 3, "{c:?}");
        assert!(c[0].contains("1777") && c[1].contains("fsobs-x") && c[2].contains("BPF links"));
    }
}
