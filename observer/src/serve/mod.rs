//! Stage 5 — serve: the HTTP API (health, metrics, top, dump, events, locks, purge).

pub mod http;
mod http_purge;
pub mod metrics;
