//! Stage 2 — events: raw ring records decoded into typed events, made absolute and identified
//! (process, container, pod); the event's JSON line; the filters clients and `/events` apply.

pub mod decode;
pub mod filter;
pub mod identify;
pub mod line;
