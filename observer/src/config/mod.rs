//! Configuration: TOML (embedded default or `--config FILE`) with CLI/env overrides, validated
//! into [`Config`] before anything starts.

use std::path::{Path, PathBuf};

use observer_common::config::RuntimeConfig;
use serde::{Deserialize, Serialize};

mod node;
mod overrides;
pub mod purge;
mod sections;
pub mod tokens;

pub use node::here;
pub use overrides::{overrides_from_env, split as split_override};
pub use sections::*;

/// Where the kernel publishes its BTF.
pub const DEFAULT_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The embedded default configuration.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config {origin}: {source}")]
    Parse {
        origin: String,
        source: toml::de::Error,
    },
    #[error("config override ({keys}): {source}")]
    Override {
        keys: String,
        source: toml::de::Error,
    },
    #[error("config: {0}")]
    Invalid(String),
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub probes: ProbesSection,
    pub filters: FiltersSection,
    pub heartbeats: HeartbeatsSection,
    pub pipeline: PipelineSection,
    pub system: SystemSection,
    pub output: OutputSection,
    pub http: HttpSection,
    pub aggregate: AggregateSection,
    pub capacity: CapacitySection,
    pub recorder: RecorderSection,
    pub leak: LeakSection,
    pub growth: GrowthSection,
    pub locks: LocksSection,
    /// Checked separately ([`crate::act::purge::PurgeSection::check`]): a bad purge section turns
    /// purge off but never stops observation.
    pub purge: purge::PurgeSection,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbesSection {
    pub errnos: Vec<String>,
    pub ring_buffer_bytes: u32,
    pub delete_sample: u32,
    pub create_sample: u32,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatsSection {
    pub files: Vec<PathBuf>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FiltersSection {
    pub watch_mounts: Vec<PathBuf>,
    pub exclude_comms: Vec<String>,
    pub exclude_cgroups: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSection {
    pub queue_capacity: usize,
    pub stats_interval_secs: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemSection {
    /// `auto`, `tracepoint` or `fexit`.
    pub probe_mode: String,
    pub btf_path: PathBuf,
    pub mount_tracefs: bool,
    /// Where the node's root directory is mounted in the observer's mount namespace (`/host` in
    /// a container; `/` when the observer runs on the node itself). The paths of watched files
    /// (mounts, lock globs, purge roots, heartbeat files, `pods_log_dir`) are the node's; the
    /// observer opens them at `node_root` + path. Its own files (`dump_dir`, the socket, tokens,
    /// BTF) are paths in its own namespace.
    pub node_root: PathBuf,
    /// A process in the node's mount namespace, whose mount table is the node's: 0 = this
    /// process when `node_root` is `/`, else 1 (the node's init; needs the node's pid namespace).
    pub node_pid: u32,
}

impl Default for ProbesSection {
    fn default() -> Self {
        Self {
            errnos: vec!["ENOSPC".into(), "EDQUOT".into()],
            ring_buffer_bytes: 4 << 20,
            delete_sample: 0,
            create_sample: 0,
        }
    }
}

impl Default for PipelineSection {
    fn default() -> Self {
        Self {
            queue_capacity: 65536,
            stats_interval_secs: 10,
        }
    }
}

impl Default for SystemSection {
    fn default() -> Self {
        Self {
            probe_mode: "auto".into(),
            btf_path: DEFAULT_BTF.into(),
            mount_tracefs: true,
            node_root: "/".into(),
            node_pid: 0,
        }
    }
}

/// Which program set to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeMode {
    /// fexit where the kernel allows it, tracepoints for the rest (and as fallback).
    Auto,
    /// Only `sys_exit` tracepoints.
    Tracepoint,
    /// The fexit set must attach (refusal is an error); tracepoints complement it.
    Fexit,
}

impl std::str::FromStr for ProbeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "tracepoint" => Ok(Self::Tracepoint),
            "fexit" => Ok(Self::Fexit),
            other => Err(format!(
                "unknown probe mode {other:?} (auto, tracepoint or fexit)"
            )),
        }
    }
}

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub mode: ProbeMode,
    pub file: FileConfig,
    pub runtime: RuntimeConfig,
    pub filters: Filters,
}

/// Filters resolved to what the kernel compares.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    /// Kernel-encoded dev_t of watched filesystems.
    pub devs: Vec<u32>,
    pub comms: Vec<[u8; 16]>,
    pub cgroups: Vec<u64>,
}

fn resolve_filters(f: &FiltersSection, node_root: &Path) -> Result<Filters, ConfigError> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = Filters::default();
    let mut table = None;
    for m in &f.watch_mounts {
        let m = &here(node_root, m);
        let dev = match crate::node::fsio::metadata(m) {
            Ok(meta) => Some(crate::node::kernel_dev(meta.dev())),
            // A hung mount point's device from the mount table (no call into the filesystem).
            Err(e) if e.is_hung() => table
                .get_or_insert_with(crate::node::mounts::MountTable::load)
                .dev_of(&m.to_string_lossy()),
            Err(_) => None,
        };
        let dev = dev.ok_or_else(|| {
            ConfigError::Invalid(format!(
                "filters.watch_mounts: {}: not found (or a hung filesystem that is not a mount point)",
                m.display()
            ))
        })?;
        out.devs.push(dev);
    }
    for c in &f.exclude_comms {
        let b = c.as_bytes();
        if b.is_empty() || b.len() > 15 {
            return Err(ConfigError::Invalid(format!(
                "filters.exclude_comms: {c:?} must be 1 to 15 bytes (the kernel's comm)"
            )));
        }
        let mut comm = [0u8; 16];
        comm[..b.len()].copy_from_slice(b);
        out.comms.push(comm);
    }
    for g in &f.exclude_cgroups {
        let id = match g.parse::<u64>() {
            Ok(id) => id,
            Err(_) => std::fs::metadata(g)
                .map(|m| m.ino())
                .map_err(|e| ConfigError::Invalid(format!("filters.exclude_cgroups: {g}: {e}")))?,
        };
        out.cgroups.push(id);
    }
    let max = observer_common::config::FILTER_ENTRIES_MAX as usize;
    if out.devs.len() > max || out.comms.len() > max || out.cgroups.len() > max {
        return Err(ConfigError::Invalid(format!(
            "filters: at most {max} entries per list"
        )));
    }
    Ok(out)
}

impl FileConfig {
    #[cfg(test)]
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        Self::parse_with(text, origin, &[])
    }

    /// Parses `text` and applies `section.key=value` overrides (values in TOML syntax; a bare
    /// word is taken as a string).
    pub fn parse_with(
        text: &str,
        origin: &str,
        overrides: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let parse_err = |source| ConfigError::Parse {
            origin: origin.into(),
            source,
        };
        // Parsing the text itself first gives errors with line and column numbers.
        let direct: Self = toml::from_str(text).map_err(parse_err)?;
        if overrides.is_empty() {
            return Ok(direct);
        }
        let mut table: toml::Table = toml::from_str(text).map_err(parse_err)?;
        for (key, value) in overrides {
            overrides::apply(&mut table, key, value)?;
        }
        Self::deserialize(table).map_err(|source| ConfigError::Override {
            keys: overrides
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            source,
        })
    }

    /// The file at `path` (or the embedded default) with `overrides` applied.
    pub fn load(path: Option<&Path>, overrides: &[(String, String)]) -> Result<Self, ConfigError> {
        match path {
            None => Self::parse_with(DEFAULT_TOML, "(embedded default)", overrides),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                Self::parse_with(&text, &p.display().to_string(), overrides)
            }
        }
    }

    pub fn validate(self) -> Result<Config, ConfigError> {
        let mut runtime = RuntimeConfig::default();
        if self.probes.errnos.is_empty() {
            return Err(ConfigError::Invalid(
                "probes.errnos is empty: nothing would be reported".into(),
            ));
        }
        for name in &self.probes.errnos {
            let n = crate::node::errno::parse(name).ok_or_else(|| {
                ConfigError::Invalid(format!("probes.errnos: unknown errno {name:?}"))
            })?;
            if !runtime.watch_errno(n) {
                return Err(ConfigError::Invalid(format!(
                    "probes.errnos: {name} ({n}) is above {}",
                    observer_common::config::ERRNO_MASK_MAX
                )));
            }
        }
        let rb = self.probes.ring_buffer_bytes;
        if !rb.is_power_of_two() || rb < 4096 {
            return Err(ConfigError::Invalid(format!(
                "probes.ring_buffer_bytes = {rb}: must be a power of two of at least 4096"
            )));
        }
        if self.pipeline.queue_capacity == 0 {
            return Err(ConfigError::Invalid(
                "pipeline.queue_capacity must be at least 1".into(),
            ));
        }
        runtime.delete_sample = self.probes.delete_sample;
        runtime.create_sample = self.probes.create_sample;
        let root = &self.system.node_root;
        if !root.is_absolute() || !crate::node::fsio::metadata(root).is_ok_and(|m| m.is_dir()) {
            return Err(ConfigError::Invalid(format!(
                "system.node_root: {}: must be an absolute path to a directory (where the node's root is mounted, or /)",
                root.display()
            )));
        }
        let filters = resolve_filters(&self.filters, &self.system.node_root)?;
        use observer_common::config::{
            CONFIG_EXCLUDE_CGROUPS, CONFIG_EXCLUDE_COMMS, CONFIG_FILTER_DEVS,
        };
        for (set, flag) in [
            (!filters.devs.is_empty(), CONFIG_FILTER_DEVS),
            (!filters.comms.is_empty(), CONFIG_EXCLUDE_COMMS),
            (!filters.cgroups.is_empty(), CONFIG_EXCLUDE_CGROUPS),
        ] {
            if set {
                runtime.flags |= flag;
            }
        }
        runtime.self_tgid = std::process::id();
        validate(&self, &filters)?;
        let mode = self
            .system
            .probe_mode
            .parse()
            .map_err(|e| ConfigError::Invalid(format!("system.probe_mode: {e}")))?;
        Ok(Config {
            mode,
            file: self,
            runtime,
            filters,
        })
    }
}

#[cfg(test)]
#[path = "fuzz_tests.rs"]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    /// `section.key` -> value of every key (the `[[purge.policies]]` array, an example in the
    /// files, is left out).
    fn keys(t: &toml::Table) -> std::collections::BTreeMap<String, toml::Value> {
        let mut out = std::collections::BTreeMap::new();
        for (section, v) in t {
            let Some(inner) = v.as_table() else { continue };
            for (k, v) in inner {
                if format!("{section}.{k}") != "purge.policies" {
                    out.insert(format!("{section}.{k}"), v.clone());
                }
            }
        }
        out
    }

    /// The embedded default file, the config structs and `docs/configuration.md` name the same
    /// keys with the same default values: a key added to one and not the others fails here.
    #[test]
    fn every_key_is_in_the_default_file_the_structs_and_the_docs() {
        let default: toml::Table = toml::from_str(DEFAULT_TOML).unwrap();
        let from_structs = toml::Table::try_from(FileConfig::default()).unwrap();
        assert_eq!(
            keys(&default),
            keys(&from_structs),
            "default.toml vs the structs"
        );
        let doc = include_str!("../../../docs/configuration.md");
        let block = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("a toml block in docs/configuration.md");
        let documented: toml::Table = toml::from_str(block).expect("the docs' block parses");
        assert_eq!(
            keys(&documented),
            keys(&default),
            "docs/configuration.md vs default.toml"
        );
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = FileConfig::load(None, &[]).unwrap().validate().unwrap();
        assert!(c.runtime.watches_errno(28) && c.runtime.watches_errno(122));
        assert!(!c.runtime.watches_errno(5));
        assert_eq!(c.file.probes.ring_buffer_bytes, 4 << 20);
    }

    #[test]
    fn partial_file_takes_defaults() {
        let c = FileConfig::parse("[probes]\nerrnos = [\"EIO\", \"28\"]\n", "t").unwrap();
        let c = c.validate().unwrap();
        assert!(c.runtime.watches_errno(5) && c.runtime.watches_errno(28));
        assert_eq!(c.file.pipeline.queue_capacity, 65536);
    }

    #[test]
    fn filters_resolve_to_kernel_values() {
        let text = "[filters]\nwatch_mounts = [\"/\"]\nexclude_comms = [\"backup\"]\n\
                    exclude_cgroups = [\"42\"]\n";
        let c = FileConfig::parse(text, "t").unwrap().validate().unwrap();
        use std::os::unix::fs::MetadataExt as _;
        let root_dev = std::fs::metadata("/").unwrap().dev();
        assert_eq!(c.filters.devs, vec![crate::node::kernel_dev(root_dev)]);
        assert_eq!(&c.filters.comms[0][..7], b"backup\0");
        assert_eq!(c.filters.cgroups, vec![42]);
        use observer_common::config::*;
        assert_eq!(
            c.runtime.flags,
            CONFIG_FILTER_DEVS | CONFIG_EXCLUDE_COMMS | CONFIG_EXCLUDE_CGROUPS
        );
        let e = FileConfig::parse(
            "[filters]\nexclude_comms = [\"way-too-long-comm-name\"]",
            "t",
        )
        .unwrap()
        .validate();
        assert!(e.unwrap_err().to_string().contains("15 bytes"));
        let e = FileConfig::parse("[filters]\nwatch_mounts = [\"/no/such/dir\"]", "t")
            .unwrap()
            .validate();
        assert!(e.unwrap_err().to_string().contains("/no/such/dir"));
    }

    #[test]
    fn bad_input_gets_a_clear_message() {
        let e = FileConfig::parse("[probes]\nerrnoz = []\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("errnoz"), "{e}");
        let e = FileConfig::parse("[probes]\nerrnos = [\"ENOPE\"]\n", "t")
            .unwrap()
            .validate();
        assert!(e.unwrap_err().to_string().contains("ENOPE"));
        let e = FileConfig::parse("[probes]\nring_buffer_bytes = 5000\n", "t")
            .unwrap()
            .validate();
        assert!(e.unwrap_err().to_string().contains("power of two"));
    }
}
