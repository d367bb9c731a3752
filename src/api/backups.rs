//! Backups: `backup create` (queued as a job, followed with `--wait`), `list`, `show`,
//! `keep` (a new expiry) and `delete` (catalog first, then the store).

use chrono::{DateTime, Utc};
use serde_json::json;

use super::call::Call;
use super::error::{ApiError, Outcome, to_value};
use super::jobs::{follow, taking_jobs};
use crate::catalog::{
    ActivityEntry, BackupName, BackupRecord, CatalogError, JobRecord, JobState, QueueError,
};
use crate::context::Context;
use crate::control::protocol::ErrorCode;
use crate::repo::manifest::{Manifest, is_safe_name};

/// A readable, sortable, unique name: `20261124-030000-manual`.
pub fn generated_name(trigger: &str, now: DateTime<Utc>) -> String {
    format!("{}-{trigger}", now.format("%Y%m%d-%H%M%S"))
}

/// A backup as asked for, before its checks.
pub struct BackupAsk {
    env: String,
    name: Option<String>,
    keep_until: Option<DateTime<Utc>>,
}

impl BackupAsk {
    pub fn new(env: String, name: Option<String>, keep_until: Option<DateTime<Utc>>) -> Self {
        BackupAsk {
            env,
            name,
            keep_until,
        }
    }
}

pub async fn create(call: &Call<'_>, ask: BackupAsk, wait: bool) -> Outcome {
    let (ctx, caller) = (call.ctx, call.caller);
    let BackupAsk {
        env,
        name,
        keep_until,
    } = ask;
    if let Some(until) = keep_until
        && until <= ctx.clock.now()
    {
        return Err(ApiError::new(
            ErrorCode::Invalid,
            format!("--keep-until {} is in the past", until.to_rfc3339()),
        ));
    }
    let args = keep_until.map(|until| {
        serde_json::to_string(&crate::jobs::backup::BackupArgs {
            keep_until: Some(until),
        })
        .expect("serializes")
    });
    taking_jobs(ctx)?;
    let explicit = name.is_some();
    let base = name.unwrap_or_else(|| generated_name("manual", ctx.clock.now()));
    if !is_safe_name(&base) {
        return Err(ApiError::bad_backup_name(&base));
    }
    let job = queue_named(
        ctx,
        NamedJob {
            env: &env,
            base: &base,
            generated: !explicit,
            trigger: "manual",
            user: &caller.user,
            args,
        },
    )
    .await??;
    tracing::info!(job = job.id, env = %env, backup = job.backup.as_deref().unwrap_or(""), user = %caller.user, "backup queued");
    ctx.runner.wake();
    job_outcome(call, job, wait).await
}

/// A backup or import job to queue under a name.
pub struct NamedJob<'a> {
    pub env: &'a str,
    /// The name asked for, or generated from the time.
    pub base: &'a str,
    /// Whether `base` was generated (`BackupName::Generated`: a taken one gets a
    /// suffix) or asked for (`BackupName::Exact`: a taken one is refused).
    pub generated: bool,
    pub trigger: &'a str,
    pub user: &'a str,
    pub args: Option<String>,
}

/// Queues the job and reserves its backup's name; a name asked for that is taken
/// is refused (`QueueError::Duplicate`).
pub async fn queue_named(
    ctx: &Context,
    job: NamedJob<'_>,
) -> Result<Result<JobRecord, QueueError>, CatalogError> {
    let host = ctx.config().daemon.host.clone();
    let (env, base, trigger, user) = (
        job.env.to_owned(),
        job.base.to_owned(),
        job.trigger.to_owned(),
        job.user.to_owned(),
    );
    let (generated, args) = (job.generated, job.args);
    ctx.catalog
        .blocking(move |c| {
            let name = match generated {
                true => BackupName::Generated(&base),
                false => BackupName::Exact(&base),
            };
            match c.queue_backup(&env, name, &host, &trigger, &user, args.as_deref()) {
                Err(QueueError::Catalog(e)) => Err(e),
                other => Ok(other),
            }
        })
        .await
}

/// A queued backup (or import) job: itself, or with `wait` its progress and then the
/// finished job with its backup (an error if it failed).
pub async fn job_outcome(call: &Call<'_>, job: JobRecord, wait: bool) -> Outcome {
    if !wait {
        return to_value(job);
    }
    let env = job.env.clone().unwrap_or_default();
    let finished = follow(call.ctx, job.id, call.replies).await?;
    let name = finished.backup.clone().unwrap_or_default();
    if finished.state != JobState::Succeeded {
        return Err(ApiError::new(
            ErrorCode::Failed,
            format!(
                "{} {name} of {env} {}: {}",
                finished.kind,
                finished.state,
                finished.error.as_deref().unwrap_or("no reason recorded")
            ),
        ));
    }
    let backup = find_backup(call.ctx, &env, &name).await?;
    to_value(json!({ "job": finished, "backup": backup }))
}

/// A backup that has completed: `keep` and `delete` leave one being created alone.
async fn find_completed(ctx: &Context, env: &str, name: &str) -> Result<BackupRecord, ApiError> {
    let backup = find_backup(ctx, env, name).await?;
    if backup.status != "completed" {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("backup {name} of {env} is still being created"),
        ));
    }
    Ok(backup)
}

pub async fn find_backup(ctx: &Context, env: &str, name: &str) -> Result<BackupRecord, ApiError> {
    let (env_c, name_c) = (env.to_owned(), name.to_owned());
    ctx.catalog
        .blocking(move |c| c.get_backup(&env_c, &name_c))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("environment {env} has no backup {name:?}"),
            )
        })
}

pub async fn keep(
    call: &Call<'_>,
    env: String,
    name: String,
    until: Option<DateTime<Utc>>,
) -> Outcome {
    let (ctx, caller) = (call.ctx, call.caller);
    let backup = find_completed(ctx, &env, &name).await?;
    if let Some(until) = until
        && until <= ctx.clock.now()
    {
        return Err(ApiError::new(
            ErrorCode::Invalid,
            format!("--until {} is in the past", until.to_rfc3339()),
        ));
    }
    let detail = until.map_or_else(
        || "kept forever".to_owned(),
        |t| format!("kept until {}", t.to_rfc3339()),
    );
    let activity = ActivityEntry::now(
        &caller.user,
        Some(&env),
        "keep",
        Some(&name),
        "succeeded",
        Some(detail),
    );
    // Object Lock follows the new expiry before the catalog says it.
    if ctx.repo.lock_policy().is_some()
        && let Some(id) = backup.manifest.as_deref()
    {
        let manifest = ctx.repo.load_manifest(&env, id).await?;
        ctx.repo.relock_backup(&manifest, until).await?;
    }
    let (env_c, name_c) = (env.clone(), name.clone());
    ctx.catalog
        .blocking(move |c| {
            c.set_backup_expiry(&env_c, &name_c, until)?;
            c.add_activity(&activity)
        })
        .await?;
    to_value(find_backup(ctx, &env, &name).await?)
}

pub async fn delete(call: &Call<'_>, env: String, name: String) -> Outcome {
    let (ctx, caller) = (call.ctx, call.caller);
    let backup = find_completed(ctx, &env, &name).await?;
    let manifest = match backup.manifest.as_deref() {
        Some(id) => Some(ctx.repo.load_manifest(&env, id).await?),
        None => None,
    };
    if let Some(manifest) = &manifest {
        refuse_locked(ctx, &backup, manifest).await?;
    }
    // The catalog first: a crash before the store is cleaned leaves a backup that a
    // catalog rebuild brings back, never a listed backup without data.
    let (env_c, name_c) = (env.clone(), name.clone());
    ctx.catalog
        .blocking(move |c| c.remove_backup(&env_c, &name_c))
        .await?;
    let report = ctx.repo.prune(manifest.as_slice()).await?;
    let activity = ActivityEntry::now(
        &caller.user,
        Some(&env),
        "delete",
        Some(&name),
        "succeeded",
        None,
    );
    ctx.catalog
        .blocking(move |c| c.add_activity(&activity))
        .await?;
    tracing::info!(env = %env, backup = %name, user = %caller.user, "backup deleted");
    to_value(json!({ "deleted": name, "prune": report }))
}

/// Under Object Lock, a backup whose manifest is still locked (or held) cannot be
/// deleted: the store would only hide it.
async fn refuse_locked(
    ctx: &Context,
    backup: &BackupRecord,
    manifest: &Manifest,
) -> Result<(), ApiError> {
    if ctx.repo.lock_policy().is_none() {
        return Ok(());
    }
    let (env, name) = (&backup.env, &backup.name);
    if backup.expires.is_none() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "backup {name} of {env} is kept forever under a legal hold (store.lock): give it an expiry with `backup keep --until` first"
            ),
        ));
    }
    match ctx.repo.manifest_locked_until(env, &manifest.id).await? {
        Some(until) => Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "backup {name} of {env} is locked until {} (store.lock): it can be deleted from then on",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        )),
        None => Ok(()),
    }
}

pub async fn list(call: &Call<'_>, env: String) -> Outcome {
    to_value(
        call.ctx
            .catalog
            .blocking(move |c| c.list_backups(&env))
            .await?,
    )
}

pub async fn show(call: &Call<'_>, env: &str, backup: &str) -> Outcome {
    to_value(find_backup(call.ctx, env, backup).await?)
}
