//! Stage 3 — analyze: bounded aggregation by path, process and workload, leak suspects,
//! capacity and time-to-full, and the lock guard.

pub mod aggregate;
pub mod capacity;
pub mod leak;
pub mod locks;
pub mod table;
