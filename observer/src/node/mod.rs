//! The node as the daemon sees it: its mount table, devices, processes, clocks and errno names.
//! Facts read from the machine; imports no stage.

pub mod errno;
pub mod mounts;
