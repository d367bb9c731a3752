//! Jobs: `job list`, `show`, `watch` (progress until the job ends) and `cancel`.

use std::time::Duration;

use tokio::sync::mpsc;

use super::call::Call;
use super::error::{ApiError, Outcome, to_value};
use crate::catalog::{ActivityEntry, JobKind, JobRecord};
use crate::context::Context;
use crate::control::protocol::{ErrorCode, Progress, Reply};

/// The most jobs one `job list` answers.
const LIST_LIMIT: u32 = 1000;

/// Refuses a new job while the daemon stops.
pub fn taking_jobs(ctx: &Context) -> Result<(), ApiError> {
    match ctx.shutdown.is_cancelled() {
        true => Err(ApiError::shutting_down()),
        false => Ok(()),
    }
}

pub async fn list(call: &Call<'_>) -> Outcome {
    to_value(
        call.ctx
            .catalog
            .blocking(|c| c.list_jobs(LIST_LIMIT))
            .await?,
    )
}

pub async fn show(call: &Call<'_>, id: i64) -> Outcome {
    to_value(find_job(call.ctx, id).await?)
}

pub async fn watch(call: &Call<'_>, id: i64) -> Outcome {
    find_job(call.ctx, id).await?;
    to_value(follow(call.ctx, id, call.replies).await?)
}

/// Sends progress while the job runs; returns its final record.
pub async fn follow(
    ctx: &Context,
    id: i64,
    replies: &mpsc::Sender<Reply>,
) -> Result<JobRecord, ApiError> {
    let mut finished = ctx.runner.subscribe();
    let mut last_sent: Option<Progress> = None;
    loop {
        let job = find_job(ctx, id).await?;
        if job.is_finished() {
            return Ok(job);
        }
        let progress = ctx.runner.progress(id).unwrap_or(Progress {
            job: id,
            state: job.state,
            ..Default::default()
        });
        if last_sent.as_ref() != Some(&progress) {
            if replies
                .send(Reply::Progress(progress.clone()))
                .await
                .is_err()
            {
                return Ok(job); // the client left; the job goes on
            }
            last_sent = Some(progress);
        }
        tokio::select! {
            _ = finished.recv() => {}
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

async fn find_job(ctx: &Context, id: i64) -> Result<JobRecord, ApiError> {
    ctx.catalog
        .blocking(move |c| c.get_job(id))
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no job {id}")))
}

/// Cancels a job: a running one stops at its next safe point, a queued one never
/// starts; answers with the finished job.
pub async fn cancel(call: &Call<'_>, id: i64) -> Outcome {
    let (ctx, caller) = (call.ctx, call.caller);
    let job = find_job(ctx, id).await?;
    if job.is_finished() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("job {id} already {}", job.state),
        ));
    }
    if !ctx.runner.cancel(id) {
        // Still queued: it never started, so cancelling is just a state change.
        let activity = ActivityEntry::now(
            &caller.user,
            job.env.as_deref(),
            job.kind.as_str(),
            job.backup.as_deref(),
            "cancelled",
            Some("cancelled while queued".into()),
        );
        let cancelled = ctx
            .catalog
            .blocking(move |c| c.cancel_queued(id, &activity))
            .await?;
        if cancelled {
            if job.kind == JobKind::Import {
                // Its files are closed.
                let args = crate::jobs::import::args_of(ctx, id).await;
                drop(ctx.runner.take_import(&args.token));
            }
        } else {
            // It started in the meantime: stop it like any running job.
            ctx.runner.cancel(id);
        }
    }
    to_value(follow(ctx, id, &mpsc::channel(1).0).await?)
}
