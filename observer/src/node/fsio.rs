//! Filesystem calls that may never return (a hung NFS server, a stopped FUSE daemon) made with
//! a deadline: the call runs on a helper thread and the caller waits at most `timeout`. A path
//! with a call that outlived its deadline is not asked again until that call returns, so a hung
//! filesystem costs one parked thread per path, not one per attempt. Calls that are merely
//! concurrent (two threads stat the same mount) both run.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

/// How long a statvfs or stat may take before the filesystem counts as not answering.
pub const FS_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("not answering within {0:?} (a hung filesystem?)")]
    NotAnswering(Duration),
    #[error("{0}")]
    Failed(std::io::Error),
}

impl FsError {
    pub fn is_hung(&self) -> bool {
        matches!(self, Self::NotAnswering(_))
    }
}

/// Paths with calls that outlived their deadline and are still running, with how many.
static STUCK: Mutex<Option<HashMap<PathBuf, usize>>> = Mutex::new(None);

fn stuck<R>(f: impl FnOnce(&mut HashMap<PathBuf, usize>) -> R) -> R {
    f(STUCK
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_default())
}

/// One call's fate, decided under its lock: finished in time, or late (then it is in `STUCK`
/// until it returns).
#[derive(Default)]
struct Fate {
    finished: bool,
    late: bool,
}

/// Runs `f(path)` on a helper thread and waits at most `timeout` for it.
pub fn within<T: Send + 'static>(
    path: &Path,
    timeout: Duration,
    f: impl FnOnce(&Path) -> std::io::Result<T> + Send + 'static,
) -> Result<T, FsError> {
    let key = path.to_path_buf();
    if stuck(|s| s.contains_key(&key)) {
        return Err(FsError::NotAnswering(timeout));
    }
    let fate = Arc::new(Mutex::new(Fate::default()));
    let (tx, rx) = mpsc::sync_channel(1);
    let (owned, theirs) = (key.clone(), Arc::clone(&fate));
    std::thread::Builder::new()
        .name("fs-call".into())
        .spawn(move || {
            let r = f(&owned);
            let mut fate = theirs.lock().unwrap_or_else(|p| p.into_inner());
            fate.finished = true;
            if fate.late {
                stuck(|s| {
                    if let Some(n) = s.get_mut(&owned) {
                        *n -= 1;
                        if *n == 0 {
                            s.remove(&owned);
                        }
                    }
                });
            }
            let _: Result<(), _> = tx.send(r);
        })
        .map_err(FsError::Failed)?;
    if let Ok(r) = rx.recv_timeout(timeout) {
        return r.map_err(FsError::Failed);
    }
    let mut fate = fate.lock().unwrap_or_else(|p| p.into_inner());
    if fate.finished {
        // Returned between the deadline and this lock: the answer is there.
        return rx
            .recv()
            .map_err(|_| FsError::NotAnswering(timeout))?
            .map_err(FsError::Failed);
    }
    fate.late = true;
    stuck(|s| *s.entry(key).or_default() += 1);
    Err(FsError::NotAnswering(timeout))
}

/// `statvfs(2)` with a deadline.
pub fn statvfs(path: &Path) -> Result<nix::sys::statvfs::Statvfs, FsError> {
    within(path, FS_TIMEOUT, |p| {
        nix::sys::statvfs::statvfs(p).map_err(std::io::Error::from)
    })
}

/// `stat(2)` (following symlinks) with a deadline.
pub fn metadata(path: &Path) -> Result<std::fs::Metadata, FsError> {
    within(path, FS_TIMEOUT, |p| std::fs::metadata(p))
}

/// `lstat(2)` (not following a final symlink) with a deadline.
pub fn symlink_metadata(path: &Path) -> Result<std::fs::Metadata, FsError> {
    within(path, FS_TIMEOUT, |p| std::fs::symlink_metadata(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_does_not_return_in_time_is_not_repeated_until_it_does() {
        let p = Path::new("/fsobs-test/slow");
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let r = within(p, Duration::from_millis(50), move |_| {
            let _: Result<(), _> = release_rx.recv();
            Ok(1)
        });
        assert!(r.is_err_and(|e| e.is_hung()));
        // Merely concurrent calls on one path both run.
        let q = Path::new("/fsobs-test/busy");
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let first = std::thread::spawn(move || {
            within(q, Duration::from_secs(5), move |_| {
                let _: Result<(), _> = go_rx.recv();
                Ok(1)
            })
        });
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(within(q, Duration::from_secs(5), |_| Ok(2)).ok(), Some(2));
        go_tx.send(()).unwrap();
        assert_eq!(first.join().unwrap().ok(), Some(1));
        // Still stuck: refused without a new thread (this closure would succeed at once).
        let again = within(p, Duration::from_secs(5), |_| Ok(2));
        assert!(again.is_err_and(|e| e.is_hung()));
        release_tx.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match within(p, Duration::from_secs(5), |_| Ok(3)) {
                Ok(v) => {
                    assert_eq!(v, 3);
                    break;
                }
                Err(_) => assert!(std::time::Instant::now() < deadline),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            metadata(Path::new("/")).map(|m| m.is_dir()).ok(),
            Some(true)
        );
        assert!(statvfs(Path::new("/no/such/dir")).is_err_and(|e| !e.is_hung()));
    }
}
