//! Start-up: restores a kill left half done are rolled back.
//!
//! The catalog knows which environments a killed restore had begun changing and
//! which safety backup holds their state before it (`catalog/recovery.rs`). With
//! `restore.on_interrupt = "rollback"` (the default) the daemon queues, for each, a
//! restore of that safety backup as user [`DAEMON_USER`], before it serves anyone: the
//! restore job stops the app, puts every part back, starts the app and runs its check,
//! and records the outcome like any restore (activity action `rollback`). A rollback
//! killed in turn stays pending and is queued again by the next start, at most
//! [`MAX_ATTEMPTS`] times in all; then, as with `"leave"`, the environment is left
//! `update-failed` with the command that rolls it back.

use std::collections::BTreeMap;

use super::restore::RestoreArgs;
use crate::catalog::{CatalogError, JobKind, PendingRollback, QueueError};
use crate::context::Context;

/// The user a rollback the daemon decided itself is recorded under.
pub const DAEMON_USER: &str = "envsnapd";

/// Automatic rollbacks of one interrupted restore before the daemon leaves it to a
/// person: a rollback that kills the daemon every time must not loop forever.
const MAX_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
enum RecoveryError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("the safety backup {0} is not a completed backup in the catalog")]
    NoSafetyBackup(String),
}

/// Queues the pending rollbacks (see the module's documentation); problems are
/// logged and leave the environment `update-failed` with the command to run.
pub async fn queue_rollbacks(ctx: &Context) {
    let pending = match ctx
        .catalog
        .blocking(|c| c.pending_rollbacks(DAEMON_USER))
        .await
    {
        Ok(pending) => pending,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the interrupted restores to roll back");
            return;
        }
    };
    for rollback in pending {
        let env = rollback.env.clone();
        let queued = match rollback.attempts {
            n if n >= MAX_ATTEMPTS => give_up(ctx, &rollback).await,
            _ => queue_one(ctx, &rollback).await,
        };
        if let Err(e) = queued {
            tracing::error!(env = %env, error = %e, "cannot roll back the interrupted restore");
            let why = format!("restore interrupted by a daemon restart; no rollback: {e}");
            let _ = ctx
                .catalog
                .blocking(move |c| c.give_up_rollback(&env, &why))
                .await;
        }
    }
    ctx.runner.wake();
}

async fn queue_one(ctx: &Context, rollback: &PendingRollback) -> Result<(), RecoveryError> {
    let (env, safety) = (rollback.env.clone(), rollback.safety_backup.clone());
    let record = ctx
        .catalog
        .blocking(move |c| c.get_backup(&env, &safety))
        .await?
        .filter(|b| b.status == "completed");
    let manifest = record
        .and_then(|b| b.manifest)
        .ok_or_else(|| RecoveryError::NoSafetyBackup(rollback.safety_backup.clone()))?;
    let args = RestoreArgs {
        source_host: None,
        source_env: rollback.env.clone(),
        backup: rollback.safety_backup.clone(),
        manifest,
        // Every part of the safety backup, found in its manifest by the job.
        parts: BTreeMap::new(),
        safety_backup: false,
        after_interrupt: true,
    };
    let json = serde_json::to_string(&args).expect("plain data serializes");
    let (env, safety) = (rollback.env.clone(), rollback.safety_backup.clone());
    let job = ctx
        .catalog
        .blocking(move |c| Ok(c.queue_restore(JobKind::Restore, &env, DAEMON_USER, &safety, &json)))
        .await??;
    tracing::warn!(job = job.id, env = %rollback.env, backup = %rollback.safety_backup,
        "restore interrupted by a restart: rolling back to the safety backup");
    Ok(())
}

async fn give_up(ctx: &Context, rollback: &PendingRollback) -> Result<(), RecoveryError> {
    let env = rollback.env.clone();
    let why = format!(
        "restore interrupted by a daemon restart; {} rollbacks were interrupted too",
        rollback.attempts
    );
    tracing::error!(env = %env, "{why}: leaving the environment update-failed");
    ctx.catalog
        .blocking(move |c| c.give_up_rollback(&env, &why))
        .await?;
    Ok(())
}
