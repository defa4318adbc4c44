//! Stage 6 — act: the emergency purge, the only stage that changes the node (dry run unless a
//! policy allows deletion).

pub mod purge;
