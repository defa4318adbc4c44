//! The node as the daemon sees it: its mount table, devices, processes, clocks and errno names.
//! Facts read from the machine; imports no stage.

pub mod beneath;
pub mod cgroups;
pub mod clock;
pub mod deleted;
pub mod du;
pub mod errno;
pub mod fsio;
#[cfg(test)]
pub mod fuzzing;
pub mod leftovers;
pub mod mounted;
pub mod mounts;
pub mod owners;
pub mod sockets;
pub mod text;

/// Kernel encoding (major << 20 | minor) of a userspace `st_dev`.
pub fn kernel_dev(st_dev: u64) -> u32 {
    let (major, minor) = (libc::major(st_dev), libc::minor(st_dev));
    (major << 20) | minor
}

/// `major:minor` of a kernel-encoded dev_t (major << 20 | minor).
pub fn dev_string(dev: u32) -> String {
    format!("{}:{}", dev >> 20, dev & 0xfffff)
}

/// Static facts about this observer, for dump headers and build info.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeInfo {
    pub node: String,
    pub kernel: String,
    pub probe_mode: &'static str,
    pub version: &'static str,
}

impl NodeInfo {
    pub fn new(probe_mode: &'static str) -> Self {
        let uts = nix::sys::utsname::uname().ok();
        let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uts.as_ref()
                .map(|u| f(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        Self {
            node: std::env::var("NODE_NAME").unwrap_or_else(|_| field(|u| u.nodename())),
            kernel: field(|u| u.release()),
            probe_mode,
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}
