//! Stage 4 — record: events as published (recorder, `/events`), the flight recorder and dumps.

pub mod published;
pub mod recorder;
