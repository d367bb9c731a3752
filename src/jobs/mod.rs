//! The job runner: persisted queue → running tasks.
//!
//! Jobs are rows in the catalog (`queued → running → succeeded | failed |
//! cancelled`). The runner loop wakes when a job is queued or one ends, asks the
//! catalog which queued jobs may start (oldest first, one per environment, at most
//! `daemon.max_jobs` at once), marks them running and spawns them. Each running job
//! has a cancellation token and a progress value that `job watch` and `--wait` read.
//! On shutdown the loop stops starting jobs and cancels the running ones, which stop
//! at a safe point; their tasks are tracked so the daemon waits for them.

pub mod backup;
pub mod import;
pub mod prune;
pub mod restore;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::JobRecord;
use crate::control::protocol::Progress;
use crate::daemon::Daemon;

struct Active {
    cancel: CancellationToken,
    progress: Progress,
}

pub struct Runner {
    wake: Notify,
    active: Mutex<HashMap<i64, Active>>,
    /// What an import job reads (its client's files, URLs), by the job's token: held
    /// before the job is queued, until it runs (a restart loses them, and the job then
    /// fails saying so).
    imports: Mutex<HashMap<String, Vec<(String, import::Source)>>>,
    finished: broadcast::Sender<i64>,
    tracker: TaskTracker,
}

impl Default for Runner {
    fn default() -> Self {
        Runner {
            wake: Notify::new(),
            active: Mutex::new(HashMap::new()),
            imports: Mutex::new(HashMap::new()),
            finished: broadcast::channel(64).0,
            tracker: TaskTracker::new(),
        }
    }
}

impl Runner {
    /// Holds an import's sources (part name, where from) under `token` until its job
    /// runs.
    pub fn hold_import(&self, token: &str, sources: Vec<(String, import::Source)>) {
        self.imports
            .lock()
            .expect("runner lock")
            .insert(token.to_owned(), sources);
    }

    pub(crate) fn take_import(&self, token: &str) -> Option<Vec<(String, import::Source)>> {
        self.imports.lock().expect("runner lock").remove(token)
    }

    /// Asks the loop to look at the queue again.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The latest progress of a running job.
    pub fn progress(&self, job: i64) -> Option<Progress> {
        self.active().get(&job).map(|a| a.progress.clone())
    }

    pub fn set_progress(&self, progress: Progress) {
        if let Some(active) = self.active().get_mut(&progress.job) {
            active.progress = progress;
        }
    }

    /// Cancels a running job; false if it is not running here.
    pub fn cancel(&self, job: i64) -> bool {
        self.active().get(&job).map(|a| a.cancel.cancel()).is_some()
    }

    pub fn running(&self) -> usize {
        self.active().len()
    }

    /// Ids of jobs as they finish.
    pub fn subscribe(&self) -> broadcast::Receiver<i64> {
        self.finished.subscribe()
    }

    /// Waits until every spawned job has ended (after shutdown cancelled them).
    pub async fn wait_idle(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// The runner loop; returns when `daemon.shutdown` fires, after cancelling running jobs.
pub async fn run(daemon: Arc<Daemon>) {
    loop {
        start_runnable(&daemon).await;
        tokio::select! {
            () = daemon.runner.wake.notified() => {}
            () = daemon.shutdown.cancelled() => break,
        }
    }
    for active in daemon.runner.active().values() {
        active.cancel.cancel();
    }
}

async fn start_runnable(daemon: &Arc<Daemon>) {
    let slots = daemon
        .config()
        .daemon
        .max_jobs
        .saturating_sub(daemon.runner.running());
    if slots == 0 || daemon.shutdown.is_cancelled() {
        return;
    }
    let runnable = match daemon
        .catalog
        .blocking(move |c| c.runnable_jobs(slots))
        .await
    {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the job queue");
            return;
        }
    };
    for job in runnable {
        let id = job.id;
        match daemon.catalog.blocking(move |c| c.start_job(id)).await {
            Ok(true) => {}
            Ok(false) => continue, // cancelled while queued
            Err(e) => {
                tracing::error!(job = id, error = %e, "cannot start job");
                continue;
            }
        }
        let cancel = CancellationToken::new();
        let progress = Progress {
            job: id,
            state: "running".into(),
            ..Default::default()
        };
        daemon.runner.active().insert(
            id,
            Active {
                cancel: cancel.clone(),
                progress,
            },
        );
        let daemon = daemon.clone();
        daemon.runner.tracker.clone().spawn(async move {
            run_job(&daemon, job, cancel).await;
            // What a job allocated goes back to the system: an idle daemon stays small.
            crate::memory::release_free_memory();
            daemon.runner.active().remove(&id);
            let _ = daemon.runner.finished.send(id);
            daemon.runner.wake();
        });
    }
}

async fn run_job(daemon: &Arc<Daemon>, job: JobRecord, cancel: CancellationToken) {
    tracing::info!(job = job.id, kind = %job.kind, env = job.env.as_deref().unwrap_or(""), "job started");
    match job.kind.as_str() {
        "backup" => backup::run(daemon, &job, cancel).await,
        "import" => import::run(daemon, &job, cancel).await,
        "restore" => restore::run(daemon, &job, cancel).await,
        other => {
            let error = format!("unknown job kind {other:?}");
            let _ = daemon
                .catalog
                .blocking(move |c| c.finish_job(job.id, "failed", Some(&error), None))
                .await;
        }
    }
}
