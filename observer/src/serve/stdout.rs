//! Event lines on stdout (JSON Lines), for a node's log pipeline or a person at a terminal.

use std::{
    io::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

/// The stdout writer: a broken pipe or full disk under a redirect is counted and logged once,
/// never fatal.
#[derive(Debug, Default)]
pub struct Stdout {
    /// Writes that failed.
    pub failures: AtomicU64,
}

impl crate::record::Sink for Stdout {
    /// Every event's line, written at once.
    fn publish(&self, batch: &[std::sync::Arc<crate::record::published::Published>]) {
        let mut out = Vec::with_capacity(batch.len() * 512);
        for p in batch {
            p.write_line(&mut out);
            out.push(b'\n');
        }
        self.write(&out);
    }
}

impl Stdout {
    pub fn write(&self, s: &[u8]) {
        if s.is_empty() {
            return;
        }
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(s).and_then(|()| out.flush())
            && self.failures.fetch_add(1, Ordering::Relaxed) == 0
        {
            tracing::warn!(error = %e, "cannot write to stdout; events are being lost there");
        }
    }
}
