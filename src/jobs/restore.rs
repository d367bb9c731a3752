//! The restore job: replace an environment's parts with a backup's, or roll back.
//!
//! The checks that can refuse a restore (access, backup state, version, a concurrent
//! restore, part mapping) ran before the job was queued (`api/restore.rs`); nothing has
//! changed yet when this starts. Sequence: status `updating` (set when the job
//! starts) → a `pre-restore` safety backup of the current state → `app.stop` →
//! every mapped part restored (trees beside databases: `restore/parts.rs`) →
//! `app.start` → `app.check` → `ready`.
//!
//! Any failure after the app was stopped restores every part from the safety backup,
//! starts the app again, and leaves the environment `update-failed` with the cause in
//! `last_error`; the job's error says what failed and whether the rollback did. A
//! failure before the stop (the safety backup itself) changes nothing. A daemon
//! killed mid-restore rolls the environment back from the safety backup when it
//! starts again (`jobs/recovery.rs`: a job of this kind with `after_interrupt`), or,
//! with `restore.on_interrupt = "leave"`, leaves it `update-failed` with the safety
//! backup named in `env show`.

mod error;
mod parts;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::backup::{BackupRequest, make_backup};
use crate::catalog::{ActivityEntry, BackupRecord, JobKind, JobRecord, JobState};
use crate::commands::CommandError;
use crate::config::EnvConfig;
use crate::context::Context;
use crate::repo::manifest::Manifest;
pub use error::RestoreError;
use parts::restore_parts;

/// The job's arguments, stored with it in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreArgs {
    /// The host whose store prefix holds the backup; `None` for this host.
    pub source_host: Option<String>,
    pub source_env: String,
    pub backup: String,
    /// The backup's manifest id.
    pub manifest: String,
    /// Backup part → target part; empty in a rollback after an interrupted restore,
    /// which puts back every part of its backup.
    pub parts: BTreeMap<String, String>,
    pub safety_backup: bool,
    /// A rollback the daemon queued at start-up, to the safety backup of a restore a
    /// kill left half done (`jobs/recovery.rs`).
    #[serde(default)]
    pub after_interrupt: bool,
}

/// Why a rollback did not bring the environment back.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("data restored from {backup}, but app.start failed: {source}")]
    AppStart {
        backup: String,
        source: CommandError,
    },
}

/// How a restore ended badly.
struct Failure {
    cause: RestoreError,
    /// Whether anything of the environment was touched (the app stopped).
    touched: bool,
    /// The rollback's outcome (the safety backup's name), when one ran.
    rollback: Option<Result<String, RollbackError>>,
}

impl Failure {
    fn before_changes(cause: RestoreError) -> Self {
        Failure {
            cause,
            touched: false,
            rollback: None,
        }
    }

    fn message(&self) -> String {
        match &self.rollback {
            None if self.touched => format!("{}; no safety backup to roll back to", self.cause),
            None => format!("{}; nothing was changed", self.cause),
            Some(Ok(backup)) => format!("{}; rolled back to {backup}", self.cause),
            Some(Err(e)) => format!("{}; ROLLBACK FAILED: {e}", self.cause),
        }
    }
}

pub async fn run(ctx: &Arc<Context>, job: &JobRecord, cancel: CancellationToken) {
    let env = job.env.clone().unwrap_or_default();
    let args = super::args::job_args::<RestoreArgs>(ctx, job.id).await;
    let after_interrupt = args.as_ref().is_some_and(|a| a.after_interrupt);
    let outcome = match args {
        Some(args) => restore(ctx, job, &env, &args, &cancel).await,
        None => Err(Failure::before_changes(RestoreError::NoArguments)),
    };
    record_outcome(ctx, job, &env, &outcome, after_interrupt).await;
    match &outcome {
        Ok(()) => tracing::info!(job = job.id, env = %env, "restore succeeded"),
        Err(f) => tracing::error!(job = job.id, env = %env, error = %f.message(), "restore failed"),
    }
}

/// The job's end in one catalog transaction: the environment's status (`ready`,
/// `update-failed`, or as it was when nothing changed), the activity entries of the
/// restore and of its rollback, and the job's state. A rollback after an interrupted
/// restore is logged as one, and its failure names the command to try again.
async fn record_outcome(
    ctx: &Context,
    job: &JobRecord,
    env: &str,
    outcome: &Result<(), Failure>,
    after_interrupt: bool,
) {
    let env = env.to_owned();
    let backup = job.backup.clone();
    let (state, error) = match outcome {
        Ok(()) => (JobState::Succeeded, None),
        Err(failure) if after_interrupt => (
            JobState::Failed,
            Some(format!(
                "rolling back the restore a restart interrupted: {}; try again with: envsnapctl restore {env} {} --yes",
                failure.cause,
                backup.as_deref().unwrap_or_default(),
            )),
        ),
        Err(failure) => (JobState::Failed, Some(failure.message())),
    };
    let action = match after_interrupt {
        true => "rollback",
        false => "restore",
    };
    let mut entries = vec![ActivityEntry::now(
        &job.user,
        Some(&env),
        action,
        backup.as_deref(),
        state.as_str(),
        error.clone(),
    )];
    if let Err(Failure {
        rollback: Some(rollback),
        ..
    }) = outcome
    {
        let (outcome, detail) = match rollback {
            Ok(safety) => ("succeeded", Some(format!("restored {safety}"))),
            Err(e) => ("failed", Some(e.to_string())),
        };
        entries.push(ActivityEntry::now(
            &job.user,
            Some(&env),
            "rollback",
            backup.as_deref(),
            outcome,
            detail,
        ));
    }
    let (status, last_error) = match outcome {
        Ok(()) => ("ready", None),
        Err(f) if f.touched => ("update-failed", error.clone()),
        // Nothing changed: back to how it was (a standing failure stays visible).
        Err(_) => {
            let env_c = env.clone();
            let state = ctx
                .catalog
                .blocking(move |c| c.env_state(&env_c))
                .await
                .ok();
            match state.and_then(|s| s.last_error) {
                Some(previous) => ("update-failed", Some(previous)),
                None => ("ready", None),
            }
        }
    };
    let (id, env_c) = (job.id, env.clone());
    let recorded = ctx
        .catalog
        .blocking(move |c| {
            c.finish_restore(
                id,
                (&env_c, status, last_error.as_deref()),
                (state, error.as_deref()),
                &entries,
            )
        })
        .await;
    if let Err(e) = recorded {
        tracing::error!(job = job.id, env = %env, error = %e, "cannot record the restore's outcome");
    }
}

async fn restore(
    ctx: &Arc<Context>,
    job: &JobRecord,
    env: &str,
    args: &RestoreArgs,
    cancel: &CancellationToken,
) -> Result<(), Failure> {
    let config = ctx.config();
    let env_config = config
        .env(env)
        .ok_or_else(|| Failure::before_changes(RestoreError::EnvironmentGone(env.to_owned())))?
        .clone();
    let source = ctx
        .source_repo(args.source_host.as_deref())
        .await
        .map_err(|e| Failure::before_changes(RestoreError::SourceRepository(e)))?;
    let manifest = source
        .load_manifest(&args.source_env, &args.manifest)
        .await
        .map_err(|source| {
            Failure::before_changes(RestoreError::Manifest {
                backup: args.backup.clone(),
                source,
            })
        })?;

    let safety = match args.safety_backup {
        true => Some(
            safety_backup(ctx, job, env, cancel)
                .await
                .map_err(Failure::before_changes)?,
        ),
        false => None,
    };
    let hook_env = hook_vars(env, job, &args.backup);
    let timeout = config.daemon.command_timeout;
    let app = &env_config.app;
    let run_app = |step, commands| app_step(step, commands, &hook_env, timeout);
    // From here on the environment changes: a restart must find it to repair.
    let env_owned = env.to_owned();
    let marked = ctx
        .catalog
        .blocking(move |c| c.mark_restore_changing(&env_owned))
        .await;
    if let Err(e) = marked {
        return Err(Failure::before_changes(RestoreError::RecordProgress(e)));
    }
    if let Err(cause) = run_app("stop", &app.stop).await {
        return Err(roll_back(ctx, &env_config, safety.as_ref(), cause, &hook_env).await);
    }
    let parts = match args.after_interrupt {
        true => every_part(&manifest),
        false => args.parts.clone(),
    };
    let restored = restore_parts(ctx, &source, &manifest, &parts, &env_config).await;
    let started = match restored {
        Ok(()) => run_app("start", &app.start).await,
        Err(e) => Err(e),
    };
    let checked = match started {
        Ok(()) => run_app("check", &app.check).await,
        Err(e) => Err(e),
    };
    match checked {
        Ok(()) => Ok(()),
        Err(cause) => Err(roll_back(ctx, &env_config, safety.as_ref(), cause, &hook_env).await),
    }
}

/// Runs the app's `step` commands (`app.stop`, `app.start`, `app.check`).
async fn app_step(
    step: &'static str,
    commands: &[String],
    hook_env: &BTreeMap<String, String>,
    timeout: std::time::Duration,
) -> Result<(), RestoreError> {
    crate::commands::run_all(commands, hook_env, timeout)
        .await
        .map_err(|source| RestoreError::App { step, source })
}

/// Backs up the environment as it is now (trigger `pre-restore`) and records it.
async fn safety_backup(
    ctx: &Arc<Context>,
    job: &JobRecord,
    env: &str,
    cancel: &CancellationToken,
) -> Result<Manifest, RestoreError> {
    let name = format!("{}-pre-restore", ctx.clock.now().format("%Y%m%d-%H%M%S"));
    let request = BackupRequest {
        job: job.id,
        env,
        name: &name,
        trigger: "pre-restore",
        user: &job.user,
        keep_until: None,
    };
    let manifest = make_backup(ctx, &request, cancel)
        .await
        .map_err(RestoreError::SafetyBackup)?;
    let record = BackupRecord::from_manifest(&manifest);
    let env_owned = env.to_owned();
    ctx.catalog
        .blocking(move |c| {
            c.upsert_completed_backup(&record)?;
            c.set_safety_backup(&env_owned, &record.name)
        })
        .await
        .map_err(RestoreError::RecordSafetyBackup)?;
    Ok(manifest)
}

/// After a failure with the app stopped: every part back from the safety backup, then
/// the app started again.
async fn roll_back(
    ctx: &Arc<Context>,
    env: &EnvConfig,
    safety: Option<&Manifest>,
    cause: RestoreError,
    hook_env: &BTreeMap<String, String>,
) -> Failure {
    let timeout = ctx.config().daemon.command_timeout;
    let Some(safety) = safety else {
        let _ = crate::commands::run_all(&env.app.start, hook_env, timeout).await;
        return Failure {
            cause,
            touched: true,
            rollback: None,
        };
    };
    let restored = restore_parts(ctx, &ctx.repo, safety, &every_part(safety), env).await;
    let started = crate::commands::run_all(&env.app.start, hook_env, timeout).await;
    let rollback = match (restored, started) {
        (Ok(()), Ok(())) => Ok(safety.meta.name.clone()),
        (Err(e), _) => Err(e.into()),
        (Ok(()), Err(source)) => Err(RollbackError::AppStart {
            backup: safety.meta.name.clone(),
            source,
        }),
    };
    Failure {
        cause,
        touched: true,
        rollback: Some(rollback),
    }
}

/// Each of the backup's parts onto the environment's part of the same name.
fn every_part(manifest: &Manifest) -> BTreeMap<String, String> {
    manifest
        .main_parts()
        .map(|p| (p.part.clone(), p.part.clone()))
        .collect()
}

fn hook_vars(env: &str, job: &JobRecord, backup: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("ENVSNAP_ENV".to_owned(), env.to_owned()),
        ("ENVSNAP_JOB".to_owned(), job.id.to_string()),
        ("ENVSNAP_KIND".to_owned(), JobKind::Restore.to_string()),
        ("ENVSNAP_BACKUP".to_owned(), backup.to_owned()),
    ])
}
