//! Restores: the checks before anything changes, the part mapping, the dry-run plan,
//! and the restore job.
//!
//! Before a restore is queued: the source (`--from ENV` or `HOST/ENV`) is a safe
//! name and has the backup; the backup is completed and not expired; the
//! environment runs the backup's version; every backup part maps onto a part of the
//! same kind (and a database onto a database of the same engine), or is mapped away.
//! Rights on the source are checked by [`super::access`].

use std::collections::BTreeMap;

use serde_json::json;

use super::call::Call;
use super::error::{ApiError, Outcome, to_value};
use super::jobs::{follow, taking_jobs};
use crate::catalog::{ActivityEntry, JobKind, JobRecord, JobState};
use crate::config::{EnvConfig, PartSource};
use crate::context::Context;
use crate::control::protocol::ErrorCode;
use crate::jobs::restore::RestoreArgs;
use crate::repo::manifest::{Manifest, is_safe_name};
use crate::repo::{RepoError, Repository};

/// A restore as asked for, before its checks.
pub struct RestoreAsk {
    pub env: String,
    pub backup: String,
    pub from: Option<String>,
    pub map: BTreeMap<String, String>,
    pub safety_backup: bool,
}

/// Checks a restore and queues it (or, on a dry run, answers with its plan); with
/// `wait`, follows the job and answers with its outcome.
pub async fn restore(call: &Call<'_>, ask: RestoreAsk, wait: bool, dry_run: bool) -> Outcome {
    let ctx = call.ctx;
    taking_jobs(ctx)?;
    let (source_host, source_env) = parse_source(&ask)?;
    let source = open_source(ctx, source_host.as_deref()).await?;
    let manifest = find_restorable(
        ctx,
        &source,
        source_host.as_deref(),
        &source_env,
        &ask.backup,
    )
    .await?;
    let config = ctx.config();
    let env_config = config.env(&ask.env).expect("checked by Api::handle");
    check_version(ctx, env_config, &ask.backup, &manifest).await?;
    let parts = map_parts(&manifest, env_config, &ask.map)?;
    if dry_run {
        return restore_plan(&source, &manifest, env_config, &parts).await;
    }
    let args = RestoreArgs {
        source_host,
        source_env,
        backup: ask.backup.clone(),
        manifest: manifest.id.clone(),
        parts,
        safety_backup: ask.safety_backup,
        after_interrupt: false,
    };
    let job = queue(call, &ask, &args).await?;
    if !wait {
        return to_value(job);
    }
    let finished = follow(ctx, job.id, call.replies).await?;
    if finished.state != JobState::Succeeded {
        return Err(ApiError::new(
            ErrorCode::Failed,
            format!(
                "restore of {} {}: {}",
                ask.env,
                finished.state,
                finished.error.as_deref().unwrap_or("no reason recorded")
            ),
        ));
    }
    to_value(finished)
}

/// `--from ENV` or `--from HOST/ENV` (default: the target environment itself).
fn parse_source(ask: &RestoreAsk) -> Result<(Option<String>, String), ApiError> {
    let (source_host, source_env) = match ask.from.as_deref() {
        None => (None, ask.env.clone()),
        Some(from) => match from.split_once('/') {
            Some((host, env)) => (Some(host.to_owned()), env.to_owned()),
            None => (None, from.to_owned()),
        },
    };
    for name in source_host.iter().chain([&source_env]) {
        if !is_safe_name(name) {
            return Err(ApiError::invalid(format!(
                "invalid source {name:?} in --from"
            )));
        }
    }
    Ok((source_host, source_env))
}

/// The repository holding the source host's backups.
async fn open_source(ctx: &Context, host: Option<&str>) -> Result<Repository, ApiError> {
    ctx.source_repo(host).await.map_err(|e| match e {
        RepoError::NoRepository { .. } => ApiError::new(
            ErrorCode::NotFound,
            format!(
                "host {} has no backups in this store",
                host.unwrap_or_default()
            ),
        ),
        other => other.into(),
    })
}

/// The version gate: a backup restores only into an environment at its version.
async fn check_version(
    ctx: &Context,
    env: &EnvConfig,
    backup: &str,
    manifest: &Manifest,
) -> Result<(), ApiError> {
    let current = env
        .version
        .read(ctx.config().daemon.command_timeout)
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorCode::Failed,
                format!("cannot read the version of environment {}: {e}", env.name),
            )
        })?;
    if current != manifest.meta.version {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "backup {backup} has version {} but environment {} is at version {current}: update the environment to version {} first, then restore",
                manifest.meta.version, env.name, manifest.meta.version
            ),
        ));
    }
    Ok(())
}

/// Queues the restore job and records the request in the activity log.
async fn queue(
    call: &Call<'_>,
    ask: &RestoreAsk,
    args: &RestoreArgs,
) -> Result<JobRecord, ApiError> {
    let (ctx, caller) = (call.ctx, call.caller);
    let args_json = serde_json::to_string(args)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let (env, user, backup) = (ask.env.clone(), caller.user.clone(), ask.backup.clone());
    let job = ctx
        .catalog
        .blocking(move |c| Ok(c.queue_restore(JobKind::Restore, &env, &user, &backup, &args_json)))
        .await??;
    let requested = ActivityEntry {
        time: ctx.clock.now(),
        user: caller.user.clone(),
        env: Some(ask.env.clone()),
        action: "restore".into(),
        backup: Some(ask.backup.clone()),
        outcome: "requested".into(),
        detail: Some(match &ask.from {
            Some(from) => format!("from {from}, job {}", job.id),
            None => format!("job {}", job.id),
        }),
    };
    ctx.catalog
        .blocking(move |c| c.add_activity(&requested))
        .await?;
    tracing::info!(job = job.id, env = %ask.env, backup = %ask.backup, user = %caller.user, "restore queued");
    ctx.runner.wake();
    Ok(job)
}

/// The backup's manifest, if it may be restored: it exists, is complete, has not expired.
pub async fn find_restorable(
    ctx: &Context,
    source: &Repository,
    host: Option<&str>,
    env: &str,
    name: &str,
) -> Result<Manifest, ApiError> {
    let own = host.is_none_or(|h| h == ctx.repo.host());
    let missing = || {
        ApiError::new(
            ErrorCode::NotFound,
            format!("environment {env} has no backup {name:?}"),
        )
    };
    // Our own backups' expiry is the catalog's (`backup keep` changes it there).
    let (manifest, expires) = if own {
        let (env_c, name_c) = (env.to_owned(), name.to_owned());
        let record = ctx
            .catalog
            .blocking(move |c| c.get_backup(&env_c, &name_c))
            .await?
            .ok_or_else(missing)?;
        if record.status != "completed" {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("backup {name} of {env} is {}, not completed", record.status),
            ));
        }
        let manifest = source
            .load_manifest(env, record.manifest.as_deref().unwrap_or_default())
            .await?;
        (manifest, record.expires)
    } else {
        let manifests = source.list_manifests(Some(env)).await?;
        let manifest = manifests
            .into_iter()
            .rev()
            .find(|m| m.meta.name == name)
            .ok_or_else(missing)?;
        let expires = manifest.meta.expires;
        (manifest, expires)
    };
    if let Some(expires) = expires
        && expires <= ctx.clock.now()
    {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "backup {name} of {env} expired at {} and can no longer be restored",
                expires.to_rfc3339()
            ),
        ));
    }
    Ok(manifest)
}

/// Which backup part goes to which part of the target: same name unless mapped.
fn map_parts(
    manifest: &Manifest,
    env: &EnvConfig,
    map: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let invalid = |message: String| ApiError::invalid(message);
    for from in map.keys() {
        if manifest.main_parts().all(|p| &p.part != from) {
            return Err(invalid(format!(
                "--map names part {from}, which backup {} does not have",
                manifest.meta.name
            )));
        }
    }
    let targets = env.parts();
    let kind = |part: &str| part.split(':').next().unwrap_or_default().to_owned();
    let mut mapping = BTreeMap::new();
    // Companion parts (a database's roles) are restored with their main part.
    for part in manifest.main_parts() {
        let to = map
            .get(&part.part)
            .cloned()
            .unwrap_or_else(|| part.part.clone());
        if to == "-" {
            continue; // mapped away: this part of the backup is not restored
        }
        let Some(target) = targets.iter().find(|t| t.name == to) else {
            return Err(invalid(format!(
                "backup part {} has no counterpart in environment {}; map it with --map {}=PART, or skip it with --map {}=-",
                part.part, env.name, part.part, part.part
            )));
        };
        let same_kind = kind(&part.part) == kind(&target.name);
        if !same_kind {
            return Err(invalid(format!(
                "backup part {} cannot be restored into {}: different kinds",
                part.part, target.name
            )));
        }
        if let PartSource::Database(db) = &target.source
            && part.format != crate::sources::format_for(db.kind)
        {
            return Err(invalid(format!(
                "backup part {} is a {} dump; {} is a {} database",
                part.part,
                part.format,
                target.name,
                crate::sources::kind_name(db.kind)
            )));
        }
        mapping.insert(part.part.clone(), to);
    }
    Ok(mapping)
}

/// What a restore would do, part by part (`restore --dry-run`).
async fn restore_plan(
    source: &Repository,
    manifest: &Manifest,
    env: &EnvConfig,
    parts: &BTreeMap<String, String>,
) -> Outcome {
    let targets = env.parts();
    let mut planned = Vec::new();
    for (from, to) in parts {
        let target = targets
            .iter()
            .find(|t| &t.name == to)
            .expect("mapped above");
        let record = manifest.part(from).expect("mapped above");
        let entry = match &target.source {
            PartSource::Tree { path, exclude } => {
                let plan = source
                    .plan_tree_restore_excluding(manifest, from, path, exclude)
                    .await?;
                json!({ "part": from, "target": to, "path": path, "plan": plan })
            }
            PartSource::Database(_) => {
                json!({ "part": from, "target": to, "replace_database": true, "bytes_to_write": record.size, "bytes_to_fetch": record.size })
            }
        };
        planned.push(entry);
    }
    let untouched: Vec<&str> = targets
        .iter()
        .map(|t| t.name.as_str())
        .filter(|t| !parts.values().any(|v| v == t))
        .collect();
    to_value(json!({
        "dry_run": true,
        "env": env.name,
        "backup": manifest.meta.name,
        "from": manifest.meta.env,
        "version": manifest.meta.version,
        "parts": planned,
        "untouched": untouched,
    }))
}
