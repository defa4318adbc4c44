//! What the lock tests ask the observer, and the processes they hold locks with.

use std::{path::Path, process::Child};

use crate::{Observer, Value, http_get, observer_cmd};

/// `GET /locks?path=P`.
pub fn lock(obs: &Observer, path: &Path) -> Value {
    let (status, body) = http_get(obs.addr(), &format!("/locks?path={}", path.display()));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// `observer lock-status PATH` exit code.
pub fn lock_status(obs: &Observer, path: &Path) -> i32 {
    let o = observer_cmd(&["lock-status", path.to_str().unwrap(), "--addr", obs.addr()]);
    o.status.code().unwrap_or(-1)
}

/// A lock holder process, killed (SIGKILL) and reaped on drop.
pub struct Holder(pub Child);

impl Holder {
    pub fn pid(&self) -> u64 {
        u64::from(self.0.id())
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _: Result<_, _> = self.0.kill();
        let _: Result<_, _> = self.0.wait();
    }
}

/// Polls `GET /locks?path=P` every 20 ms until `until` holds for the answer (returned); fails
/// after `within`, saying `what` and the last answer.
pub fn wait_lock(
    obs: &Observer,
    path: &Path,
    what: &str,
    within: std::time::Duration,
    until: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let v = lock(obs, path);
        if until(&v) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: {what} within {within:?}; last answer: {v}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
