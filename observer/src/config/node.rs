//! The node's paths: every path in the configuration is the node's; the observer opens it under
//! `system.node_root` and reads the node's mount namespace through `system.node_pid`.

use std::path::{Component, Path, PathBuf};

use super::{FileConfig, purge};

/// Where the observer opens the node's path `p`, with the node's root at `node_root`.
pub fn here(node_root: &Path, p: &Path) -> PathBuf {
    match p.strip_prefix("/") {
        Ok(rel) if node_root != Path::new("/") => node_root.join(rel),
        _ => p.to_path_buf(),
    }
}

impl FileConfig {
    /// Where the observer opens the node's path `p` (see `system.node_root`).
    pub fn here(&self, p: &Path) -> PathBuf {
        here(&self.system.node_root, p)
    }

    /// The process whose mount namespace is the node's (`None`: this one).
    pub fn node_process(&self) -> Option<u32> {
        match self.system.node_pid {
            0 if self.system.node_root == Path::new("/") => None,
            0 => Some(1),
            pid => Some(pid),
        }
    }

    /// The purge section with each policy's root where the observer opens it. The node's own
    /// root stays `/` (which the policy check refuses, as it refuses it on the node), and a
    /// `..` stays visible to that check.
    pub fn purge_here(&self) -> purge::PurgeSection {
        let mut s = self.purge.clone();
        for p in &mut s.policies {
            if p.root
                .components()
                .any(|c| matches!(c, Component::Normal(_)))
            {
                p.root = self.here(&p.root);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_paths_are_opened_under_node_root_and_the_nodes_root_is_never_a_purge_root() {
        let host = Path::new("/host");
        assert_eq!(
            here(host, Path::new("/var/lib/x")),
            Path::new("/host/var/lib/x")
        );
        assert_eq!(
            here(Path::new("/"), Path::new("/var/lib/x")),
            Path::new("/var/lib/x")
        );
        let mut f = FileConfig::default();
        f.system.node_root = host.into();
        for (root, opened) in [("/", "/"), ("/var/lib/ci", "/host/var/lib/ci")] {
            f.purge.policies = vec![purge::PolicyConfig {
                root: root.into(),
                ..Default::default()
            }];
            assert_eq!(f.purge_here().policies[0].root, Path::new(opened));
        }
        // `..` stays in the path, where the policy check refuses it.
        f.purge.policies[0].root = "/../etc".into();
        assert!(
            f.purge_here().policies[0]
                .root
                .components()
                .any(|c| c == Component::ParentDir)
        );
    }
}
