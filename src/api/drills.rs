//! Restore drills: `drill ENV [BACKUP]` queues one (and with `--wait` follows it and
//! answers with its report), `drill list ENV`, `drill show ID`.
//!
//! The backup must be completed and unexpired, like a restore's; by default it is
//! the environment's newest completed backup. One drill per environment is queued
//! or running at a time.

use super::call::Call;
use super::error::{ApiError, Outcome, to_value};
use super::jobs::{follow, taking_jobs};
use super::restore::find_restorable;
use crate::catalog::{ActivityEntry, DrillRecord, JobState};
use crate::context::Context;
use crate::control::protocol::ErrorCode;
use crate::drill::sandbox::{check_room, room_needed};
use crate::jobs::drill::DrillArgs;

/// The most drills one `drill list` answers.
const LIST_LIMIT: u32 = 1000;

/// A drill as asked for.
pub struct DrillAsk {
    pub env: String,
    pub backup: Option<String>,
    pub keep: bool,
}

pub async fn create(call: &Call<'_>, ask: DrillAsk, wait: bool) -> Outcome {
    let (ctx, caller) = (call.ctx, call.caller);
    taking_jobs(ctx)?;
    let backup = match ask.backup {
        Some(name) => name,
        None => newest_backup(ctx, &ask.env).await?,
    };
    let manifest = find_restorable(ctx, &ctx.repo, None, &ask.env, &backup).await?;
    // Refused now when there is no room; the job checks again when it starts.
    check_room(&ctx.config().daemon.state_dir, room_needed(&manifest))
        .map_err(|e| ApiError::new(ErrorCode::Conflict, e.to_string()))?;
    let args = serde_json::to_string(&DrillArgs {
        source_host: None,
        source_env: ask.env.clone(),
        backup: backup.clone(),
        manifest: manifest.id.clone(),
        keep: ask.keep,
    })
    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let (env, user, name) = (ask.env.clone(), caller.user.clone(), backup.clone());
    let job = ctx
        .catalog
        .blocking(move |c| Ok(c.queue_drill(&env, &user, &name, &args, None)))
        .await??;
    let requested = ActivityEntry::now(
        &caller.user,
        Some(&ask.env),
        "drill",
        Some(&backup),
        "requested",
        Some(format!("job {}", job.id)),
    );
    ctx.catalog
        .blocking(move |c| c.add_activity(&requested))
        .await?;
    tracing::info!(job = job.id, env = %ask.env, backup = %backup, user = %caller.user, "drill queued");
    ctx.runner.wake();
    if !wait {
        return to_value(job);
    }
    let finished = follow(ctx, job.id, call.replies).await?;
    if finished.state != JobState::Succeeded {
        return Err(ApiError::new(
            ErrorCode::Failed,
            format!(
                "drill {} of {} backup {backup} {}: {}",
                job.id,
                ask.env,
                finished.state,
                finished.error.as_deref().unwrap_or("no reason recorded")
            ),
        ));
    }
    to_value(find_drill(ctx, job.id).await?)
}

async fn newest_backup(ctx: &Context, env: &str) -> Result<String, ApiError> {
    let env_c = env.to_owned();
    ctx.catalog
        .blocking(move |c| c.last_backup(&env_c))
        .await?
        .map(|b| b.name)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("environment {env} has no completed backup to drill"),
            )
        })
}

pub async fn list(call: &Call<'_>, env: String) -> Outcome {
    to_value(
        call.ctx
            .catalog
            .blocking(move |c| c.list_drills(&env, LIST_LIMIT))
            .await?,
    )
}

pub async fn show(call: &Call<'_>, id: i64) -> Outcome {
    to_value(find_drill(call.ctx, id).await?)
}

async fn find_drill(ctx: &Context, id: i64) -> Result<DrillRecord, ApiError> {
    let host = ctx.repo.host().to_owned();
    ctx.catalog
        .blocking(move |c| c.get_drill(&host, id))
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no drill {id}")))
}
