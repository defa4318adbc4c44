//! The purge threads: one planner (runs are sequential) and `workers` removal threads fed from
//! the trash. The async side only sends requests and awaits replies.

use std::{
    os::fd::AsFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
};

use tokio::sync::oneshot;

use super::{Purge, PurgeItem, PurgeRun, PurgeStats, TrashJob, run, safefs};

#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("purge is disabled: {0}")]
    Disabled(String),
    #[error("no purge policy {0:?} (configured: {1})")]
    UnknownPolicy(String, String),
    #[error("a purge is already queued; try again when it has finished")]
    Busy,
    #[error("policy {0:?} does not allow this: {1}")]
    NotAllowed(String, &'static str),
    #[error("the purge thread has stopped")]
    Stopped,
}

/// A purge asked for (manually or by a trigger).
#[derive(Clone, Debug)]
pub struct Request {
    /// `None`: every policy.
    pub policy: Option<String>,
    pub execute: bool,
    /// `manual` or the trigger's name.
    pub trigger: String,
    /// Who asked (audited with every decision).
    pub requested_by: String,
}

/// The trigger of requests made through the API.
pub const MANUAL: &str = "manual";

struct Job {
    policies: Vec<String>,
    execute: bool,
    trigger: String,
    requested_by: String,
    reply: Option<oneshot::Sender<Vec<PurgeRun>>>,
}

/// Publishes one audit item (the daemon sends it to the recorder, `/events` and stdout).
pub type Audit = Arc<dyn Fn(&PurgeItem) + Send + Sync>;
/// Absolute paths of the locks whose holder is alive (from the lock guard).
pub type LiveLocks = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

pub struct Purger {
    pub purge: Option<Arc<Purge>>,
    /// Why purge is off (disabled in the config, or the config was refused).
    pub disabled: String,
    tx: Option<mpsc::SyncSender<Job>>,
    pub stats: Arc<PurgeStats>,
}

impl Purger {
    /// A purger that refuses every request with `why`.
    pub fn off(why: impl Into<String>) -> Self {
        Self {
            purge: None,
            disabled: why.into(),
            tx: None,
            stats: Arc::default(),
        }
    }

    /// Starts the threads; resumes removing whatever a previous run left in the trash.
    pub fn start(purge: Purge, audit: Audit, live_locks: LiveLocks) -> std::io::Result<Self> {
        let purge = Arc::new(purge);
        let stats = Arc::new(PurgeStats::default());
        let (trash_tx, trash_rx) = mpsc::channel::<TrashJob>();
        let trash_rx = Arc::new(Mutex::new(trash_rx));
        let budget = Arc::new(safefs::RateBudget::new(purge.section.max_removals_per_sec));
        for i in 0..purge.section.workers {
            let (rx, stats, budget) = (trash_rx.clone(), stats.clone(), budget.clone());
            std::thread::Builder::new()
                .name(format!("purge-rm-{i}"))
                .spawn(move || remove_loop(&rx, &stats, &budget))?;
        }
        let enqueue = {
            let stats = stats.clone();
            move |job: TrashJob| {
                stats
                    .trash_pending_bytes
                    .fetch_add(job.bytes, Ordering::Relaxed);
                let _: Result<_, _> = trash_tx.send(job);
            }
        };
        let (tx, rx) = mpsc::sync_channel::<Job>(1);
        {
            let (purge, stats) = (purge.clone(), stats.clone());
            std::thread::Builder::new()
                .name("purge-plan".into())
                .spawn(move || {
                    resume_trash(&purge, &enqueue);
                    let seq = AtomicU64::new(super::unix_now() as u64 * 1000);
                    while let Ok(job) = rx.recv() {
                        let mut runs = Vec::new();
                        for name in &job.policies {
                            let Some(policy) = purge.policies.iter().find(|p| &p.cfg.name == name)
                            else {
                                continue;
                            };
                            let ctx = run::RunCtx {
                                policy,
                                trash_name: &purge.section.trash_dir,
                                execute: job.execute,
                                trigger: &job.trigger,
                                requested_by: &job.requested_by,
                                run_id: seq.fetch_add(1, Ordering::Relaxed),
                                live_locks: live_locks(),
                                enqueue: &enqueue,
                                audit: &*audit,
                            };
                            let r = run::run(&ctx);
                            tracing::info!(
                                policy = %r.policy, trigger = %r.trigger, mode = r.mode,
                                deleted = r.deleted, would_delete = r.would_delete,
                                skipped = r.skipped, bytes = r.bytes, error = ?r.error,
                                "purge run"
                            );
                            stats.record(&r);
                            runs.push(r);
                        }
                        if let Some(reply) = job.reply {
                            let _: Result<_, _> = reply.send(runs);
                        }
                    }
                })?;
        }
        Ok(Self {
            purge: Some(purge),
            disabled: String::new(),
            tx: Some(tx),
            stats,
        })
    }

    /// Queues a run (never blocks); the receiver gets the runs' reports.
    pub fn request(&self, req: Request) -> Result<oneshot::Receiver<Vec<PurgeRun>>, PurgeError> {
        let (Some(purge), Some(tx)) = (&self.purge, &self.tx) else {
            return Err(PurgeError::Disabled(self.disabled.clone()));
        };
        let names: Vec<String> = purge.policies.iter().map(|p| p.cfg.name.clone()).collect();
        let policies = match req.policy {
            None => names,
            Some(p) if names.contains(&p) => vec![p],
            Some(p) => return Err(PurgeError::UnknownPolicy(p, names.join(", "))),
        };
        // A policy is the law: what it does not allow, no request can make it do.
        if req.execute {
            for p in purge
                .policies
                .iter()
                .filter(|p| policies.contains(&p.cfg.name))
            {
                if !p.cfg.execute {
                    return Err(PurgeError::NotAllowed(
                        p.cfg.name.clone(),
                        "execute = false (dry runs only)",
                    ));
                }
                if req.trigger == MANUAL && !p.cfg.manual_execute {
                    return Err(PurgeError::NotAllowed(
                        p.cfg.name.clone(),
                        "manual_execute = false (only its triggers delete)",
                    ));
                }
            }
        }
        let (reply, rx) = oneshot::channel();
        tx.try_send(Job {
            policies,
            execute: req.execute,
            trigger: req.trigger,
            requested_by: req.requested_by,
            reply: Some(reply),
        })
        .map_err(|e| match e {
            mpsc::TrySendError::Full(_) => PurgeError::Busy,
            mpsc::TrySendError::Disconnected(_) => PurgeError::Stopped,
        })?;
        Ok(rx)
    }
}

fn remove_loop(
    rx: &Mutex<mpsc::Receiver<TrashJob>>,
    stats: &PurgeStats,
    budget: &safefs::RateBudget,
) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        let mut out = safefs::Removed::default();
        safefs::remove_tree(job.trash.as_fd(), &job.name, budget, &mut out);
        stats.removed_files.fetch_add(out.files, Ordering::Relaxed);
        stats.removed_dirs.fetch_add(out.dirs, Ordering::Relaxed);
        stats
            .removal_errors
            .fetch_add(out.errors, Ordering::Relaxed);
        stats
            .mounts_left
            .fetch_add(out.mounts_left, Ordering::Relaxed);
        let _: Result<_, _> =
            stats
                .trash_pending_bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(job.bytes))
                });
        if out.errors > 0 || out.mounts_left > 0 {
            tracing::warn!(
                entry = %job.name.to_string_lossy(), errors = out.errors, mounts_left = out.mounts_left,
                "purge: trash entry not fully removed"
            );
        }
    }
}

/// Makes the trash directory of each policy that may delete now (while there may still be an
/// inode for it), and removes in the background what a previous run moved there but did not
/// finish removing (a restart mid-purge) — only entries purge named, never on start-up's
/// critical path. Policies that never delete get no trash and their root is left alone.
fn resume_trash(purge: &Purge, enqueue: &dyn Fn(TrashJob)) {
    use std::ffi::OsStr;
    for p in purge.policies.iter().filter(|p| p.cfg.execute) {
        let Ok(root) = safefs::open_root(&p.cfg.root) else {
            continue;
        };
        let trash = match safefs::open_trash(
            root.as_fd(),
            OsStr::new(&purge.section.trash_dir),
            true,
        ) {
            Ok(Some(fd)) => fd,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(policy = %p.cfg.name, "purge: no trash directory yet ({e}); entries will be renamed in place");
                continue;
            }
        };
        let Ok(names) = safefs::list(trash.as_fd()) else {
            continue;
        };
        let trash = Arc::new(trash);
        let names: Vec<_> = names
            .into_iter()
            .filter(|n| safefs::is_purge_entry(n))
            .collect();
        if !names.is_empty() {
            tracing::info!(policy = %p.cfg.name, entries = names.len(), "purge: resuming removal of the trash");
        }
        for name in names {
            enqueue(TrashJob {
                trash: trash.clone(),
                name,
                bytes: 0,
            });
        }
    }
}
