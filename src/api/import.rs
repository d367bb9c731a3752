//! Imports: archives made elsewhere, checked and queued as an import job.
//!
//! What can be checked without the client's files is checked twice: before the
//! server asks for the files ([`check_import`], from `Api::admit`) and again by the
//! handler. The archives themselves are checked entry by entry in the job
//! (`jobs/import.rs`). A caller other than root may import only files (no URLs,
//! which the daemon would fetch with its own network access), only into parts whose
//! dump does not run SQL as the database's user, and gets every entry as their own.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use super::access::known_env;
use super::backups::{NamedJob, generated_name, job_outcome, queue_named};
use super::call::Call;
use super::error::{ApiError, Outcome};
use super::jobs::taking_jobs;
use crate::config::{DatabaseKind, EnvConfig, PartSource};
use crate::context::Context;
use crate::control::peer::Caller;
use crate::control::protocol::ErrorCode;
use crate::jobs::import::ImportArgs;
use crate::jobs::runner::ImportSource;
use crate::repo::manifest::is_safe_name;

/// An import as asked for, before its checks.
pub struct ImportAsk {
    pub env: String,
    /// Parts whose files the client passed, in order.
    pub parts: Vec<String>,
    /// Parts to fetch from a URL.
    pub urls: BTreeMap<String, String>,
    pub name: Option<String>,
    pub version: Option<String>,
    /// Keep the archives' setuid and setgid bits (root only).
    pub keep_setuid: bool,
}

/// What an import by someone other than root may contain, and the owner its trees
/// get (the caller's user and primary group). URLs are fetched with the daemon's own
/// network access and store credentials, and a PostgreSQL or MariaDB dump runs its
/// SQL as the database's configured user: both are root's alone.
fn check_user_import(
    env: &EnvConfig,
    parts: &[String],
    urls: &BTreeMap<String, String>,
    caller: &Caller,
) -> Result<(u32, u32), ApiError> {
    let forbidden = |message: String| ApiError::new(ErrorCode::Forbidden, message);
    if !urls.is_empty() {
        return Err(forbidden(format!(
            "user {} may not import from URLs (only root may); pass the files instead",
            caller.user
        )));
    }
    for target in env.parts().into_iter().filter(|t| parts.contains(&t.name)) {
        if let PartSource::Database(db) = &target.source
            && matches!(db.kind, DatabaseKind::Postgres | DatabaseKind::Mariadb)
        {
            return Err(forbidden(format!(
                "user {} may not import {}: loading a dump runs its SQL as the database's user (only root may)",
                caller.user, target.name
            )));
        }
    }
    let gid = nix::unistd::User::from_uid(caller.uid.into())
        .ok()
        .flatten()
        .map_or(caller.uid, |u| u.gid.as_raw());
    Ok((caller.uid, gid))
}

/// An import URL must be http(s) or a store's: never a local path, which the daemon
/// (root) would read for whoever asked.
fn check_import_url(text: &str) -> Result<(), ApiError> {
    let url = url::Url::parse(text)
        .map_err(|e| ApiError::invalid(format!("invalid import URL {text:?}: {e}")))?;
    match crate::import::URL_SCHEMES.contains(&url.scheme()) {
        true => Ok(()),
        false => Err(ApiError::invalid(format!(
            "import URLs are http(s) or a store's (s3://, gs://, az://), not {}:// (pass a local file as PART=FILE)",
            url.scheme()
        ))),
    }
}

/// The checks of an import request that need none of its files: run before the
/// server asks for them (`Api::admit`), and again by the handler.
pub fn check_import(
    ctx: &Context,
    env: &str,
    parts: &[String],
    urls: &BTreeMap<String, String>,
    version: Option<&str>,
) -> Result<(), ApiError> {
    let invalid = |message: String| ApiError::invalid(message);
    known_env(ctx, env)?;
    let config = ctx.config();
    let env_config = config.env(env).expect("checked just above");
    let known: Vec<String> = env_config.parts().into_iter().map(|p| p.name).collect();
    let all: Vec<&String> = parts.iter().chain(urls.keys()).collect();
    if all.is_empty() {
        return Err(invalid(
            "an import needs at least one --part PART=FILE".into(),
        ));
    }
    for url in urls.values() {
        check_import_url(url)?;
    }
    for (i, part) in all.iter().enumerate() {
        if !known.contains(part) {
            return Err(invalid(format!(
                "environment {env} has no part {part} (it has: {})",
                known.join(", ")
            )));
        }
        if all[..i].contains(part) {
            return Err(invalid(format!("part {part} is given twice")));
        }
    }
    if let Some(version) = version
        && (version.trim().is_empty() || version.len() > 128 || version.contains('\n'))
    {
        return Err(invalid(format!("invalid version {version:?}")));
    }
    Ok(())
}

/// One regular file per part passed (not a pipe or a device the daemon would read
/// on someone's behalf).
fn check_files(parts: &[String], files: &[OwnedFd]) -> Result<(), ApiError> {
    let invalid = ApiError::invalid;
    if files.len() != parts.len() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "an import needs one file per part",
        ));
    }
    for (part, file) in parts.iter().zip(files) {
        let stat = nix::sys::stat::fstat(file).map_err(|e| invalid(format!("{part}: {e}")))?;
        if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(invalid(format!(
                "the file for part {part} is not a regular file"
            )));
        }
    }
    Ok(())
}

/// Queues an import of the client's files (one per part) as a backup with trigger
/// `import`; the checks of the archives themselves run in the job (`jobs/import.rs`).
pub async fn import(call: &Call<'_>, ask: ImportAsk, files: Vec<OwnedFd>, wait: bool) -> Outcome {
    let (ctx, caller) = (call.ctx, call.caller);
    let ImportAsk {
        env,
        parts,
        urls,
        name,
        version,
        keep_setuid,
    } = ask;
    check_import(ctx, &env, &parts, &urls, version.as_deref())?;
    let config = ctx.config();
    let env_config = config.env(&env).expect("checked by check_import");
    check_files(&parts, &files)?;
    let owner = match caller.is_unrestricted() {
        true => None,
        false => Some(check_user_import(env_config, &parts, &urls, caller)?),
    };
    if keep_setuid && owner.is_some() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "user {} may not keep setuid and setgid bits (--keep-setuid is root's)",
                caller.user
            ),
        ));
    }
    taking_jobs(ctx)?;
    let generated = name.is_none();
    let name = name.unwrap_or_else(|| generated_name("import", ctx.clock.now()));
    if !is_safe_name(&name) {
        return Err(ApiError::bad_backup_name(&name));
    }
    // The sources are held before the job exists, so the runner always finds them.
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).expect("the operating system's random source failed");
    let token = hex::encode(random);
    let sources = parts
        .into_iter()
        .zip(files.into_iter().map(ImportSource::File))
        .chain(
            urls.into_iter()
                .map(|(part, url)| (part, ImportSource::Url(url))),
        )
        .collect();
    ctx.runner.hold_import(&token, sources);
    let args = ImportArgs {
        version,
        token: token.clone(),
        owner,
        keep_setuid,
    };
    let args = serde_json::to_string(&args).expect("serializes");
    let queued = queue_named(
        ctx,
        NamedJob {
            env: &env,
            base: &name,
            generated,
            trigger: "import",
            user: &caller.user,
            args: Some(args),
        },
    )
    .await;
    let job = match queued {
        Ok(Ok(job)) => job,
        failed => {
            drop(ctx.runner.take_import(&token));
            return Err(match failed {
                // As before the typed errors: any refusal to queue is a conflict.
                Ok(Err(e)) => ApiError::new(ErrorCode::Conflict, e.to_string()),
                Err(e) => e.into(),
                Ok(Ok(_)) => unreachable!("matched above"),
            });
        }
    };
    let backup = job.backup.as_deref().unwrap_or_default();
    tracing::info!(job = job.id, env = %env, backup = %backup, user = %caller.user, "import queued");
    ctx.runner.wake();
    job_outcome(call, job, wait).await
}
