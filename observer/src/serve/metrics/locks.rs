//! The lock guard: locks by state, failed refreshes by errno, steals.

use prometheus_client::encoding::DescriptorEncoder;

use super::{Scrape, counters, gauges, single};

impl Scrape {
    pub(super) fn encode_locks(
        &self,
        enc: &mut DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        if let Some((states, failures, steals)) = &self.locks {
            gauges(
                enc,
                "fsobserver_locks",
                "Tracked locks by state",
                states
                    .iter()
                    .map(|(s, n)| (vec![("state", s.to_string())], *n as f64)),
            )?;
            counters(
                enc,
                "fsobserver_lock_heartbeat_failures",
                "Failed refreshes of tracked locks by errno",
                failures
                    .iter()
                    .map(|(e, n)| (vec![("errno", e.clone())], *n)),
            )?;
            single(
                enc,
                "fsobserver_lock_steals",
                "Locks removed or replaced by another process while the holder was alive",
                *steals,
            )?;
        }
        Ok(())
    }
}
