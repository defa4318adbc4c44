//! Event filters shared by the daemon's `/events` stream, `observer tail` and `observer replay`:
//! errno, path glob, pid, comm, kind and a start time.

use serde::Deserialize;

use super::kind::EventKind;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("unknown errno {0:?} (use a name like ENOSPC or a number)")]
    Errno(String),
    #[error("bad path glob {0:?}: {1}")]
    Glob(String, String),
    #[error("bad pid {0:?}")]
    Pid(String),
    #[error("unknown kind {0:?} (error, heartbeat, delete, create, lock or purge)")]
    Kind(String),
    #[error("bad --since {0:?}: {1} (use e.g. 30s, 5m, 1h)")]
    Since(String, String),
}

/// Filters as given on the command line or in a query string (comma-separated lists).
#[derive(Clone, Debug, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct FilterArgs {
    /// Only these errnos (names or numbers, comma-separated).
    #[arg(long)]
    pub errno: Option<String>,
    /// Only paths matching this glob (`*` stays within a directory, `**` crosses them).
    #[arg(long)]
    pub path: Option<String>,
    /// Only these process ids (comma-separated).
    #[arg(long)]
    pub pid: Option<String>,
    /// Only these process names (comma-separated).
    #[arg(long)]
    pub comm: Option<String>,
    /// Only these kinds: error, heartbeat, delete, create, lock, purge (comma-separated).
    #[arg(long)]
    pub kind: Option<String>,
    /// Also events from this long ago (from the daemon's flight recorder), e.g. 5m.
    #[arg(long)]
    pub since: Option<String>,
}

impl FilterArgs {
    /// `(name, value)` pairs for a query string.
    pub fn query_pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("errno", &self.errno),
            ("path", &self.path),
            ("pid", &self.pid),
            ("comm", &self.comm),
            ("kind", &self.kind),
            ("since", &self.since),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

/// What a filter looks at.
pub trait View {
    fn kind(&self) -> EventKind;
    fn errno(&self) -> u32;
    fn pid(&self) -> u32;
    fn comm(&self) -> &str;
    fn path(&self) -> &str;
    fn unix_ns(&self) -> u64;
}

#[derive(Clone, Debug, Default)]
pub struct Filter {
    errnos: Vec<u32>,
    path: Option<globset::GlobMatcher>,
    pids: Vec<u32>,
    comms: Vec<String>,
    kinds: Vec<EventKind>,
    /// Events at or after this Unix time (ns) only.
    pub since_unix_ns: Option<u64>,
}

fn list(s: &Option<String>) -> impl Iterator<Item = &str> {
    s.as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
}

impl Filter {
    pub fn new(a: &FilterArgs, now_unix_ns: u64) -> Result<Self, FilterError> {
        let errnos = list(&a.errno)
            .map(|e| crate::node::errno::parse(e).ok_or_else(|| FilterError::Errno(e.into())))
            .collect::<Result<_, _>>()?;
        let path = a
            .path
            .as_deref()
            .map(|g| {
                globset::GlobBuilder::new(g)
                    .literal_separator(true)
                    .build()
                    .map(|g| g.compile_matcher())
                    .map_err(|e| FilterError::Glob(g.into(), e.kind().to_string()))
            })
            .transpose()?;
        let pids = list(&a.pid)
            .map(|p| p.parse().map_err(|_| FilterError::Pid(p.into())))
            .collect::<Result<_, _>>()?;
        let kinds = list(&a.kind)
            .map(|k| EventKind::parse(k).ok_or_else(|| FilterError::Kind(k.into())))
            .collect::<Result<_, _>>()?;
        let since_unix_ns = a
            .since
            .as_deref()
            .map(|s| {
                humantime::parse_duration(s)
                    .map(|d| now_unix_ns.saturating_sub(d.as_nanos() as u64))
                    .map_err(|e| FilterError::Since(s.into(), e.to_string()))
            })
            .transpose()?;
        Ok(Self {
            errnos,
            path,
            pids,
            comms: list(&a.comm).map(String::from).collect(),
            kinds,
            since_unix_ns,
        })
    }

    pub fn matches(&self, v: &impl View) -> bool {
        (self.errnos.is_empty() || self.errnos.contains(&v.errno()))
            && self.path.as_ref().is_none_or(|g| g.is_match(v.path()))
            && (self.pids.is_empty() || self.pids.contains(&v.pid()))
            && (self.comms.is_empty() || self.comms.iter().any(|c| c == v.comm()))
            && (self.kinds.is_empty() || self.kinds.contains(&v.kind()))
            && self.since_unix_ns.is_none_or(|t| v.unix_ns() >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E(&'static str, u32, u32, &'static str, &'static str, u64);
    impl View for E {
        fn kind(&self) -> EventKind {
            EventKind::parse(self.0).unwrap()
        }
        fn errno(&self) -> u32 {
            self.1
        }
        fn pid(&self) -> u32 {
            self.2
        }
        fn comm(&self) -> &str {
            self.3
        }
        fn path(&self) -> &str {
            self.4
        }
        fn unix_ns(&self) -> u64 {
            self.5
        }
    }

    #[test]
    fn filters_combine() {
        let a = FilterArgs {
            errno: Some("ENOSPC,122".into()),
            path: Some("/mnt/a/**".into()),
            kind: Some("error".into()),
            since: Some("10s".into()),
            ..Default::default()
        };
        let f = Filter::new(&a, 100_000_000_000).unwrap();
        let now = 95_000_000_000;
        assert!(f.matches(&E("error", 28, 1, "w", "/mnt/a/x/y", now)));
        assert!(f.matches(&E("error", 122, 1, "w", "/mnt/a/y", now)));
        assert!(!f.matches(&E("error", 28, 1, "w", "/mnt/ab/y", now)));
        assert!(!f.matches(&E("error", 5, 1, "w", "/mnt/a/y", now)));
        assert!(!f.matches(&E("delete", 28, 1, "w", "/mnt/a/y", now)));
        assert!(!f.matches(&E("error", 28, 1, "w", "/mnt/a/y", 80_000_000_000)));
        let star = Filter::new(
            &FilterArgs {
                path: Some("/mnt/a/*".into()),
                pid: Some("7".into()),
                ..Default::default()
            },
            0,
        )
        .unwrap();
        assert!(star.matches(&E("error", 28, 7, "w", "/mnt/a/y", 0)));
        assert!(!star.matches(&E("error", 28, 7, "w", "/mnt/a/x/y", 0)));
        assert!(!star.matches(&E("error", 28, 8, "w", "/mnt/a/y", 0)));
    }

    #[test]
    fn bad_filters_are_clear_errors() {
        let bad = |a: FilterArgs| Filter::new(&a, 0).unwrap_err().to_string();
        assert!(
            bad(FilterArgs {
                errno: Some("ENOPE".into()),
                ..Default::default()
            })
            .contains("ENOPE")
        );
        assert!(
            bad(FilterArgs {
                kind: Some("boom".into()),
                ..Default::default()
            })
            .contains("boom")
        );
        assert!(
            bad(FilterArgs {
                pid: Some("x".into()),
                ..Default::default()
            })
            .contains("pid")
        );
        assert!(
            bad(FilterArgs {
                since: Some("soon".into()),
                ..Default::default()
            })
            .contains("since")
        );
        assert!(
            bad(FilterArgs {
                path: Some("[".into()),
                ..Default::default()
            })
            .contains("glob")
        );
    }
}
