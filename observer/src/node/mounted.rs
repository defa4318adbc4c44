//! Which filesystems the node has mounted, by device number, and which of them went away: the
//! kernel gives an anonymous device number (tmpfs, overlay, FUSE) to the next filesystem
//! mounted once its holder is unmounted, so counts kept by device number must be forgotten
//! when their filesystem goes.

use std::collections::{HashMap, HashSet};

use super::mounts::{MAX_MOUNTINFO_BYTES, node_proc, parse_dev, read_mountinfo};

/// Device number -> ids of the mounts of that filesystem (mountinfo's first field).
pub type MountedDevs = HashMap<u32, HashSet<u32>>;

/// The node's mounted filesystems; `None` when its table cannot be read (nothing can be
/// concluded from an empty answer).
pub fn node() -> Option<MountedDevs> {
    let text = read_mountinfo(&format!("{}/mountinfo", node_proc()), MAX_MOUNTINFO_BYTES)?;
    let devs = parse(&text);
    (!devs.is_empty()).then_some(devs)
}

/// The filesystems of a mountinfo text.
pub fn parse(text: &str) -> MountedDevs {
    let mut out = MountedDevs::new();
    for line in text.lines() {
        let mut f = line.split(' ');
        if let (Some(Ok(id)), _, Some(Some(dev))) = (
            f.next().map(str::parse::<u32>),
            f.next(),
            f.next().map(parse_dev),
        ) {
            out.entry(dev).or_default().insert(id);
        }
    }
    out
}

/// Filesystems of `before` that are gone from `now`: no longer mounted, or mounted again under
/// the same device number (none of its mounts is one of before's: a new filesystem given the
/// number of one unmounted in between). A bind mount added or removed changes nothing.
pub fn gone(before: &MountedDevs, now: &MountedDevs) -> HashSet<u32> {
    before
        .iter()
        .filter(|(dev, ids)| now.get(dev).is_none_or(|n| n.is_disjoint(ids)))
        .map(|(dev, _)| *dev)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:41 / /tmp/a rw shared:20 - tmpfs tmpfs rw
41 22 0:41 / /tmp/a-bind rw shared:20 - tmpfs tmpfs rw
42 22 0:42 / /tmp/b rw shared:21 - tmpfs tmpfs rw
";

    #[test]
    fn a_filesystem_is_gone_when_unmounted_or_its_number_is_given_to_another() {
        let before = parse(TABLE);
        assert_eq!(before[&41], HashSet::from([40, 41]));
        // The same table: nothing gone.
        assert!(gone(&before, &before).is_empty());
        // One of two binds unmounted: still mounted.
        let one_bind =
            parse(&TABLE.replace("40 22 0:41 / /tmp/a rw shared:20 - tmpfs tmpfs rw\n", ""));
        assert!(gone(&before, &one_bind).is_empty());
        // 0:42 unmounted; 0:41 unmounted and a new filesystem mounted with its number.
        let now = parse(
            "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
             57 22 0:41 / /tmp/c rw shared:30 - tmpfs tmpfs rw\n",
        );
        assert_eq!(gone(&before, &now), HashSet::from([41, 42]));
        // A filesystem first seen now is not gone; garbage lines are skipped.
        assert!(gone(&now, &parse(&format!("{TABLE}x y\n\n"))).contains(&41));
        assert!(parse("not a table").is_empty());
    }
}
