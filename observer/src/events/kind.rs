//! What an event is: the one vocabulary filters, the aggregation, the lock guard and the event
//! line use (checked by the compiler, not compared as strings).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(Default)]
pub enum EventKind {
    /// A failure whose errno is watched.
    #[default]
    Error,
    /// A deletion (unlink, rmdir, rename), success or failure.
    Delete,
    /// A lock refresh (utimes family, or a write to a configured heartbeat file).
    Heartbeat,
    /// A successful create (sampled).
    Create,
    /// A lock-guard event.
    Lock,
    /// A purge decision.
    Purge,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Error,
        EventKind::Delete,
        EventKind::Heartbeat,
        EventKind::Create,
        EventKind::Lock,
        EventKind::Purge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Error => "error",
            EventKind::Delete => "delete",
            EventKind::Heartbeat => "heartbeat",
            EventKind::Create => "create",
            EventKind::Lock => "lock",
            EventKind::Purge => "purge",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        assert_eq!(EventKind::parse("nope"), None);
    }
}
