//! Build info, exact in-kernel counts (failures, deletions, heartbeats), transport losses and the observer's own counters.

use prometheus_client::encoding::DescriptorEncoder;

use super::{Scrape, counters, gauges, mount_label, single};

impl Scrape {
    pub(super) fn encode_kernel(
        &self,
        enc: &mut DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let s = &self.stats;
        gauges(
            enc,
            "fsobserver_build_info",
            "Version, probe mode and kernel of this observer (value 1)",
            [(
                vec![
                    ("version", self.version.to_string()),
                    ("probe_mode", self.probe_mode.to_string()),
                    ("kernel", self.kernel.clone()),
                ],
                1.0,
            )],
        )?;
        counters(
            enc,
            "fsobserver_syscall_errors",
            "Failed filesystem syscalls, counted in the kernel (exact)",
            s.errors.iter().map(|e| {
                (
                    vec![
                        ("syscall", e.syscall.to_string()),
                        ("errno", e.errno_name.clone()),
                        ("mount", mount_label(&e.mount, &e.dev)),
                    ],
                    e.count,
                )
            }),
        )?;
        counters(
            enc,
            "fsobserver_deletes",
            "Deletions per filesystem, counted in the kernel (op: file, dir, rename, failed)",
            s.deletes_by_mount.iter().flat_map(|r| {
                let m = mount_label(&r.mount, r.dev.as_deref().unwrap_or("0:0"));
                [
                    ("file", r.files),
                    ("dir", r.dirs),
                    ("rename", r.renames),
                    ("failed", r.failed),
                ]
                .map(|(op, v)| (vec![("mount", m.clone()), ("op", op.to_string())], v))
            }),
        )?;
        counters(
            enc,
            "fsobserver_entries_created",
            "Entries created per filesystem, counted in the kernel (kind: file, dir)",
            s.deletes_by_mount.iter().flat_map(|r| {
                let m = mount_label(&r.mount, r.dev.as_deref().unwrap_or("0:0"));
                [("file", r.created), ("dir", r.mkdirs)]
                    .map(|(kind, v)| (vec![("mount", m.clone()), ("kind", kind.to_string())], v))
            }),
        )?;
        counters(
            enc,
            "fsobserver_heartbeats",
            "Lock heartbeats (utimes family, configured lock-file writes) by result",
            [("ok", s.heartbeats_ok), ("failed", s.heartbeats_failed)]
                .map(|(r, v)| (vec![("result", r.to_string())], v)),
        )?;
        counters(
            enc,
            "fsobserver_heartbeats_unsent",
            "Successful utimes-family calls counted but not sent as refreshes (reason: \
             times-restored, coalesced)",
            [
                ("times-restored", s.heartbeats_times_set),
                ("coalesced", s.heartbeats_coalesced),
            ]
            .map(|(r, v)| (vec![("reason", r.to_string())], v)),
        )?;
        for (name, help, v) in [
            (
                "fsobserver_kernel_events",
                "Records the kernel wrote to the ring",
                s.kernel_events,
            ),
            (
                "fsobserver_kernel_ring_drops",
                "Records lost because the kernel ring was full",
                s.kernel_ring_drops,
            ),
            (
                "fsobserver_kernel_filtered",
                "Calls skipped by the mount/comm/cgroup filters",
                s.kernel_filtered,
            ),
            (
                "fsobserver_userspace_queue_drops",
                "Records lost because the userspace queue was full",
                s.userspace_queue_drops,
            ),
            (
                "fsobserver_decode_errors",
                "Records that failed to decode",
                s.decode_errors,
            ),
        ] {
            single(enc, name, help, v)?;
        }
        counters(
            enc,
            "fsobserver_self",
            "The observer's own losses and failures (stream_lagged, stdout_failures, recorder_rotated, userspace_filtered)",
            self.own[4..]
                .iter()
                .map(|(k, v)| (vec![("what", k.to_string())], *v)),
        )?;
        counters(
            enc,
            "fsobserver_foreign_paths",
            "Records from other mount namespaces (containers) by the view their path ended in: node (translated) or caller (the node has no name for it)",
            self.views
                .iter()
                .map(|(k, v)| (vec![("view", k.to_string())], *v)),
        )?;
        counters(
            enc,
            "fsobserver_dumps",
            "Flight-recorder burst dumps by result (written, failed, skipped, removed by retention)",
            self.own[..4]
                .iter()
                .map(|(k, v)| (vec![("result", k.to_string())], *v)),
        )?;
        counters(
            enc,
            "fsobserver_http_connections",
            "Connections per door (api, metrics) by outcome: accepted, refused (the door held http.max_connections), header_timeout, stalled (a response nobody read)",
            self.doors.iter().flat_map(|(door, v)| {
                ["accepted", "refused", "header_timeout", "stalled"]
                    .into_iter()
                    .zip(*v)
                    .map(|(outcome, n)| {
                        (
                            vec![("door", door.to_string()), ("outcome", outcome.to_string())],
                            n,
                        )
                    })
            }),
        )?;
        gauges(
            enc,
            "fsobserver_stream_clients",
            "Clients connected to /events",
            [(Vec::new(), self.stream_clients as f64)],
        )?;
        Ok(())
    }
}
