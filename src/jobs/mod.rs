//! Jobs: the runner loop, one file per job kind, and the loops that queue jobs.
//!
//! Jobs are rows in the catalog (`queued → running → succeeded | failed |
//! cancelled`). The runner loop ([`run`]) wakes when a job is queued or one ends, asks
//! the catalog which queued jobs may start (oldest first, one per environment, at most
//! `daemon.max_jobs` at once), marks them running and spawns them. Each running job
//! has a cancellation token and a progress value ([`runner::Runner`]) that `job watch`
//! and `--wait` read. On shutdown the loop stops starting jobs and cancels the running
//! ones, which stop at a safe point; their tasks are tracked so the daemon waits for
//! them.
//!
//! - [`runner`]: the runner's state, shared through the context.
//! - [`backup`], [`import`], [`restore`], [`drill`]: one file per job kind.
//! - [`prune`]: retention applied (on demand, after each backup, daily).
//! - [`scheduler`]: cron schedules → queued backup jobs.
//! - [`recovery`]: at start-up, rollbacks of restores a kill left half done.
//! - [`fleet`]: this host's heartbeat in the store, and watching every host's.
//!
//! A new job kind gets a [`JobKind`](crate::catalog::JobKind) variant, a file here
//! with its `run`, and one arm in `run_job`.

mod args;
pub mod backup;
pub mod drill;
pub mod fleet;
pub mod import;
pub mod prune;
pub mod recovery;
pub mod restore;
pub mod runner;
pub mod scheduler;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::catalog::{JobKind, JobRecord};
use crate::context::Context;
use crate::control::protocol::{JobState, Progress};
use runner::Active;

/// The runner loop; returns when `ctx.shutdown` fires, after cancelling running jobs.
pub async fn run(ctx: Arc<Context>) {
    loop {
        start_runnable(&ctx).await;
        tokio::select! {
            () = ctx.runner.wake.notified() => {}
            () = ctx.shutdown.cancelled() => break,
        }
    }
    for active in ctx.runner.active().values() {
        active.cancel.cancel();
    }
}

async fn start_runnable(ctx: &Arc<Context>) {
    let slots = ctx
        .config()
        .daemon
        .max_jobs
        .saturating_sub(ctx.runner.running());
    if slots == 0 || ctx.shutdown.is_cancelled() {
        return;
    }
    let runnable = match ctx.catalog.blocking(move |c| c.runnable_jobs(slots)).await {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the job queue");
            return;
        }
    };
    for job in runnable {
        let id = job.id;
        match ctx.catalog.blocking(move |c| c.start_job(id)).await {
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
            state: JobState::Running,
            ..Default::default()
        };
        ctx.runner.active().insert(
            id,
            Active {
                cancel: cancel.clone(),
                progress,
            },
        );
        let ctx = ctx.clone();
        ctx.runner.tracker.clone().spawn(async move {
            run_job(&ctx, job, cancel).await;
            // What a job allocated goes back to the system: an idle daemon stays small.
            crate::memory::release_free_memory();
            ctx.runner.active().remove(&id);
            let _ = ctx.runner.finished.send(id);
            ctx.runner.wake();
        });
    }
}

async fn run_job(ctx: &Arc<Context>, job: JobRecord, cancel: CancellationToken) {
    tracing::info!(job = job.id, kind = %job.kind, env = job.env.as_deref().unwrap_or(""), "job started");
    match job.kind {
        JobKind::Backup => backup::run(ctx, &job, cancel).await,
        JobKind::Import => import::run(ctx, &job, cancel).await,
        JobKind::Restore => restore::run(ctx, &job, cancel).await,
        JobKind::Drill => drill::run(ctx, &job, cancel).await,
    }
}
