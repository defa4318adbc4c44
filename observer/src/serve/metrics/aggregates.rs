//! Failures by top-K path prefix and workload, leak suspects, and the bounded tables' own size.

use prometheus_client::encoding::DescriptorEncoder;

use super::{OTHER, Scrape, counters, gauges};

impl Scrape {
    pub(super) fn encode_aggregates(
        &self,
        enc: &mut DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let t = &self.top;
        let errno_rows = |key: (&'static str, String), c: &crate::analyze::table::Counts| {
            c.errors
                .iter()
                .map(|(errno, by)| {
                    (
                        vec![key.clone(), ("errno", errno.clone())],
                        by.values().sum(),
                    )
                })
                .collect::<Vec<_>>()
        };
        counters(
            enc,
            "fsobserver_path_errors",
            "Failures under the top-K path prefixes (rolled up; the rest is path_prefix=\"other\")",
            t.paths
                .iter()
                .flat_map(|p| errno_rows(("path_prefix", p.path_prefix.clone()), &p.counts))
                .chain(errno_rows(("path_prefix", OTHER.into()), &t.paths_other)),
        )?;
        counters(
            enc,
            "fsobserver_path_failed_write_bytes",
            "Bytes that failed writes tried to write, by top-K path prefix",
            t.paths
                .iter()
                .map(|p| {
                    (
                        vec![("path_prefix", p.path_prefix.clone())],
                        p.counts.bytes_failed,
                    )
                })
                .chain([(
                    vec![("path_prefix", OTHER.into())],
                    t.paths_other.bytes_failed,
                )]),
        )?;
        counters(
            enc,
            "fsobserver_workload_errors",
            "Failures by top-K workload (namespace/pod, container, or host)",
            t.workloads
                .iter()
                .flat_map(|w| errno_rows(("workload", w.workload.clone()), &w.counts))
                .chain(errno_rows(("workload", OTHER.into()), &t.workloads_other)),
        )?;
        gauges(
            enc,
            "fsobserver_leak_suspects",
            "Directories whose creates outpace deletes over the leak window",
            [(Vec::new(), t.leaks.len() as f64)],
        )?;
        gauges(
            enc,
            "fsobserver_leak_net_entries",
            "Net new entries over the leak window of the top-K suspected directories",
            t.leaks
                .iter()
                .take(self.top_k)
                .map(|l| (vec![("path_prefix", l.path_prefix.clone())], l.net as f64)),
        )?;
        gauges(
            enc,
            "fsobserver_aggregate_keys",
            "Keys held in the bounded aggregation tables",
            [
                ("paths", t.paths_tracked),
                ("processes", t.processes_tracked),
            ]
            .map(|(k, v)| (vec![("table", k.to_string())], v as f64)),
        )?;
        counters(
            enc,
            "fsobserver_aggregate_evicted",
            "Keys evicted from the bounded aggregation tables (their counts moved to other)",
            [
                ("paths", t.paths_evicted),
                ("processes", t.processes_evicted),
            ]
            .map(|(k, v)| (vec![("table", k.to_string())], v)),
        )?;
        Ok(())
    }
}
