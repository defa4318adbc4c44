//! Capacity of the sampled filesystems: size, free bytes and inodes, fill rate, time-to-full.

use prometheus_client::encoding::DescriptorEncoder;

use super::{Scrape, gauges};
use crate::analyze::capacity::CapacityRow;

impl Scrape {
    pub(super) fn encode_capacity(
        &self,
        enc: &mut DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let cap = &self.capacity;
        let m = |r: &CapacityRow| vec![("mount", r.mount.clone())];
        let held = &self.deleted_open;
        gauges(
            enc,
            "fsobserver_deleted_open_bytes",
            "Bytes of deleted files still open (the df vs du gap), by filesystem, top 20",
            held.iter()
                .map(|h| (vec![("mount", h.mount.clone())], h.bytes as f64)),
        )?;
        gauges(
            enc,
            "fsobserver_deleted_open_files",
            "Deleted files still open, by filesystem, top 20",
            held.iter()
                .map(|h| (vec![("mount", h.mount.clone())], h.files as f64)),
        )?;
        gauges(
            enc,
            "fsobserver_mount_size_bytes",
            "Size of a watched filesystem",
            cap.iter().map(|r| (m(r), r.size_bytes as f64)),
        )?;
        gauges(
            enc,
            "fsobserver_mount_free_bytes",
            "Bytes available to unprivileged users",
            cap.iter().map(|r| (m(r), r.free_bytes as f64)),
        )?;
        gauges(
            enc,
            "fsobserver_mount_free_inodes",
            "Inodes available",
            cap.iter().map(|r| (m(r), r.free_inodes as f64)),
        )?;
        gauges(
            enc,
            "fsobserver_mount_fill_rate",
            "Bytes or inodes consumed per second over the capacity window (negative: freed)",
            cap.iter().flat_map(|r| {
                [("bytes", r.bytes_per_sec), ("inodes", r.inodes_per_sec)].map(|(res, v)| {
                    (
                        [("mount", r.mount.clone()), ("resource", res.to_string())].to_vec(),
                        v,
                    )
                })
            }),
        )?;
        gauges(
            enc,
            "fsobserver_mount_time_to_full_seconds",
            "Seconds until the filesystem is full at the current rate (absent when not filling)",
            cap.iter().flat_map(|r| {
                [
                    ("bytes", r.bytes_full_in_secs),
                    ("inodes", r.inodes_full_in_secs),
                ]
                .into_iter()
                .filter_map(|(res, v)| {
                    Some((
                        [("mount", r.mount.clone()), ("resource", res.to_string())].to_vec(),
                        v?,
                    ))
                })
            }),
        )?;
        Ok(())
    }
}
