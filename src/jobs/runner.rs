//! The runner's state: which jobs run here now, how to cancel each, how far each is.
//!
//! This is the handle on the job queue that the context shares: request handlers wake
//! the loop after queuing a job, read progress for `job watch`, cancel running jobs,
//! and hold an import's open files until its job runs. The loop itself
//! ([`super::run`]) and the job kinds live above the context; this part depends on
//! nothing of theirs, so a context can be built without them.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::protocol::Progress;

/// Where one part of an import comes from.
pub enum ImportSource {
    File(OwnedFd),
    Url(String),
}

/// One import part: its name and where its archive comes from.
pub type ImportPart = (String, ImportSource);

pub(super) struct Active {
    pub cancel: CancellationToken,
    pub progress: Progress,
}

pub struct Runner {
    pub(super) wake: Notify,
    active: Mutex<HashMap<i64, Active>>,
    /// What an import job reads (its client's files, URLs), by the job's token: held
    /// before the job is queued, until it runs (a restart loses them, and the job then
    /// fails saying so).
    imports: Mutex<HashMap<String, Vec<ImportPart>>>,
    pub(super) finished: broadcast::Sender<i64>,
    pub(super) tracker: TaskTracker,
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
    /// Holds an import's sources under `token` until its job runs.
    pub fn hold_import(&self, token: &str, sources: Vec<ImportPart>) {
        self.imports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_owned(), sources);
    }

    pub fn take_import(&self, token: &str) -> Option<Vec<ImportPart>> {
        self.imports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token)
    }

    /// Asks the loop to look at the queue again.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(super) fn active(&self) -> MutexGuard<'_, HashMap<i64, Active>> {
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
