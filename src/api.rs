//! What each control request does: one function per command.
//!
//! Handlers check their arguments before anything changes (unknown environment,
//! invalid or duplicate name, ...) and answer with a stable error code and a one-line
//! message. Long requests (`--wait`, `job watch`) send progress through `replies`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::catalog::{ActivityEntry, CatalogError, JobRecord, QueueError};
use crate::control::protocol::{ErrorCode, Progress, Reply, Request};
use crate::daemon::Daemon;
use crate::repo::RepoError;
use crate::repo::manifest::is_safe_name;

/// How long `env list` waits for one environment's version command.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_LIMIT: u32 = 1000;

/// Who is asking (from the socket's peer credentials).
#[derive(Debug, Clone)]
pub struct Caller {
    pub uid: u32,
    pub user: String,
    pub groups: Vec<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl Caller {
    /// Root, or the user the daemon runs as (who owns its socket, state and store
    /// anyway: a daemon started by hand serves its own user), may do everything.
    pub fn is_unrestricted(&self) -> bool {
        self.uid == 0 || self.uid == nix::unistd::geteuid().as_raw()
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        ApiError::new(ErrorCode::Internal, e.to_string())
    }
}

impl From<crate::download::DownloadError> for ApiError {
    fn from(e: crate::download::DownloadError) -> Self {
        match e {
            crate::download::DownloadError::Repo(e) => e.into(),
            crate::download::DownloadError::Invalid(message) => {
                ApiError::new(ErrorCode::Invalid, message)
            }
            output => ApiError::new(ErrorCode::Internal, output.to_string()),
        }
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        let code = match &e {
            RepoError::NoSuchBackup(_) | RepoError::NoSuchPart(_) => ErrorCode::NotFound,
            RepoError::BadName(_) => ErrorCode::Invalid,
            _ => ErrorCode::Internal,
        };
        ApiError::new(code, e.to_string())
    }
}

/// A result, serialized once, straight from the records (no intermediate `Value`
/// tree: a listing of ten thousand backups would spend most of its time building one).
type Outcome = Result<Box<RawValue>, ApiError>;

fn to_value(value: impl Serialize) -> Outcome {
    serde_json::value::to_raw_value(&value)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

pub async fn handle(
    daemon: &Arc<Daemon>,
    request: Request,
    caller: &Caller,
    replies: &mpsc::Sender<Reply>,
    mut files: Vec<std::os::fd::OwnedFd>,
) -> Outcome {
    if let Some(env) = request.env()
        && !matches!(request, Request::Log { .. })
    {
        known_env(daemon, env)?;
    }
    match request {
        Request::Status => status(daemon).await,
        Request::Reload => {
            let config = daemon
                .reload()
                .map_err(|e| ApiError::new(ErrorCode::Invalid, e.to_string()))?;
            to_value(json!({ "reloaded": true, "environments": config.environments.len() }))
        }
        Request::EnvList => {
            let names: Vec<String> = daemon.config().environments.keys().cloned().collect();
            let mut views = Vec::new();
            for name in names {
                views.push(env_view(daemon, &name).await?);
            }
            to_value(views)
        }
        Request::EnvShow { env } => to_value(env_view(daemon, &env).await?),
        Request::BackupLink {
            env,
            backup,
            part,
            format,
            ttl_seconds,
        } => {
            let ttl = ttl_seconds.map_or(crate::link::DEFAULT_TTL, std::time::Duration::from_secs);
            let what = PartExport {
                env: &env,
                backup: &backup,
                part: &part,
                format: format.as_deref(),
            };
            backup_link(daemon, caller, what, ttl).await
        }
        Request::Import {
            env,
            parts,
            urls,
            name,
            version,
            wait,
        } => {
            let ask = ImportAsk {
                env,
                parts,
                urls,
                name,
                version,
            };
            import(daemon, caller, ask, files, wait, replies).await
        }
        Request::BackupDownload {
            env,
            backup,
            part,
            format,
        } => {
            let file = files.pop().ok_or_else(|| {
                ApiError::new(ErrorCode::BadRequest, "a download needs the client's file")
            })?;
            let what = PartExport {
                env: &env,
                backup: &backup,
                part: &part,
                format: format.as_deref(),
            };
            backup_download(daemon, caller, what, file).await
        }
        Request::BackupKeep { env, backup, until } => {
            backup_keep(daemon, caller, env, backup, until).await
        }
        Request::BackupCreate {
            env,
            name,
            wait,
            keep_until,
        } => {
            let ask = BackupAsk {
                env,
                name,
                keep_until,
            };
            backup_create(daemon, caller, ask, wait, replies).await
        }
        Request::BackupList { env } => to_value(
            daemon
                .catalog
                .blocking(move |c| c.list_backups(&env))
                .await?,
        ),
        Request::BackupShow { env, backup } => to_value(find_backup(daemon, &env, &backup).await?),
        Request::BackupDelete { env, backup } => backup_delete(daemon, caller, env, backup).await,
        Request::Restore {
            env,
            backup,
            from,
            map,
            wait,
            no_safety_backup,
            dry_run,
        } => {
            let ask = RestoreAsk {
                env,
                backup,
                from,
                map,
                safety_backup: !no_safety_backup,
            };
            restore(daemon, caller, ask, wait, dry_run, replies).await
        }
        Request::JobList => to_value(
            daemon
                .catalog
                .blocking(|c| c.list_jobs(DEFAULT_LIMIT))
                .await?,
        ),
        Request::JobShow { id } => to_value(find_job(daemon, id).await?),
        Request::JobWatch { id } => {
            find_job(daemon, id).await?;
            to_value(follow(daemon, id, replies).await?)
        }
        Request::JobCancel { id } => job_cancel(daemon, caller, id).await,
        Request::Log { env, since, limit } => {
            let limit = limit.unwrap_or(DEFAULT_LIMIT);
            let entries = daemon
                .catalog
                .blocking(move |c| c.list_activity(env.as_deref(), since, limit))
                .await?;
            to_value(
                entries
                    .into_iter()
                    .filter(|e| may_read(daemon, caller, e.env.as_deref()))
                    .collect::<Vec<_>>(),
            )
        }
        Request::Verify {
            env,
            backup,
            read_data,
        } => verify(daemon, env, backup, read_data).await,
        Request::Prune { dry_run } => to_value(
            crate::jobs::prune::prune(daemon, &caller.user, dry_run)
                .await
                .map_err(|e| ApiError::new(ErrorCode::Internal, e))?,
        ),
        Request::CatalogRebuild => catalog_rebuild(daemon).await,
    }
}

/// Whether the caller may see what concerns `env` (lists that span environments
/// show each caller only the environments it may read).
fn may_read(daemon: &Daemon, caller: &Caller, env: Option<&str>) -> bool {
    caller.is_unrestricted()
        || daemon.config().access_for(env).allows(
            crate::control::protocol::Action::Read,
            &caller.user,
            &caller.groups,
        )
}

fn known_env(daemon: &Daemon, env: &str) -> Result<(), ApiError> {
    if daemon.config().env(env).is_none() {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("unknown environment {env:?}"),
        ));
    }
    Ok(())
}

async fn status(daemon: &Arc<Daemon>) -> Outcome {
    let config = daemon.config();
    let store = daemon.repo.check_store().await;
    let jobs = daemon.catalog.blocking(|c| c.job_counts()).await?;
    to_value(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "host": config.daemon.host,
        "uptime_seconds": daemon.uptime().as_secs(),
        "store": { "url": crate::store::redact_url(&config.store.url), "reachable": store.is_ok(), "error": store.err().map(|e| e.to_string()) },
        "jobs": { "queued": jobs.queued, "running": jobs.running },
        "environments": config.environments.len(),
    }))
}

#[derive(Serialize)]
struct EnvView {
    name: String,
    status: String,
    version: Option<String>,
    last_error: Option<String>,
    last_backup: Option<String>,
    last_backup_at: Option<DateTime<Utc>>,
    next_run: Option<DateTime<Utc>>,
    parts: Vec<String>,
    safety_backup: Option<String>,
}

async fn env_view(daemon: &Arc<Daemon>, name: &str) -> Result<EnvView, ApiError> {
    let config = daemon.config();
    let env = config.env(name).ok_or_else(|| {
        ApiError::new(ErrorCode::NotFound, format!("unknown environment {name:?}"))
    })?;
    let owned = name.to_owned();
    let (state, last) = daemon
        .catalog
        .blocking(move |c| Ok((c.env_state(&owned)?, c.last_backup(&owned)?)))
        .await?;
    Ok(EnvView {
        name: name.to_owned(),
        status: state.status,
        version: env.version.read(VERSION_TIMEOUT).await.ok(),
        last_error: state.last_error,
        last_backup: last.as_ref().map(|b| b.name.clone()),
        last_backup_at: last.and_then(|b| b.completed),
        next_run: next_run(env, config.daemon.timezone),
        parts: env.parts().into_iter().map(|p| p.name).collect(),
        safety_backup: state.safety_backup,
    })
}

/// The earliest next run of an environment's schedules.
fn next_run(env: &crate::config::EnvConfig, tz: chrono_tz::Tz) -> Option<DateTime<Utc>> {
    let now = Utc::now();
    env.schedule
        .iter()
        .filter_map(|expr| crate::schedule::parse(expr).ok())
        .filter_map(|cron| crate::schedule::next_run(&cron, tz, now))
        .min()
}

/// A readable, sortable, unique name: `20261124-030000-manual`.
fn generated_name(trigger: &str) -> String {
    format!("{}-{trigger}", Utc::now().format("%Y%m%d-%H%M%S"))
}

/// A backup as asked for, before its checks.
struct BackupAsk {
    env: String,
    name: Option<String>,
    keep_until: Option<DateTime<Utc>>,
}

async fn backup_create(
    daemon: &Arc<Daemon>,
    caller: &Caller,
    ask: BackupAsk,
    wait: bool,
    replies: &mpsc::Sender<Reply>,
) -> Outcome {
    let BackupAsk {
        env,
        name,
        keep_until,
    } = ask;
    if let Some(until) = keep_until
        && until <= Utc::now()
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
    if daemon.shutdown.is_cancelled() {
        return Err(ApiError::new(
            ErrorCode::ShuttingDown,
            "envsnapd is shutting down and takes no new jobs",
        ));
    }
    let explicit = name.is_some();
    let base = name.unwrap_or_else(|| generated_name("manual"));
    if !is_safe_name(&base) {
        return Err(ApiError::new(
            ErrorCode::Invalid,
            format!(
                "invalid backup name {base:?}: use 1-64 of A-Z a-z 0-9 . _ - starting with a letter or digit"
            ),
        ));
    }
    let host = daemon.config().daemon.host.clone();
    let user = caller.user.clone();
    let (env_c, base_c) = (env.clone(), base.clone());
    let job = daemon
        .catalog
        .blocking(move |c| {
            // A generated name that is taken (two backups in one second) gets a suffix.
            let mut attempt = 1;
            loop {
                let name = if attempt == 1 {
                    base_c.clone()
                } else {
                    format!("{base_c}-{attempt}")
                };
                match c.queue_backup(&env_c, &name, &host, "manual", &user, args.as_deref()) {
                    Err(QueueError::Duplicate { .. }) if !explicit && attempt < 100 => attempt += 1,
                    Err(QueueError::Catalog(e)) => return Err(e),
                    other => return Ok(other),
                }
            }
        })
        .await?
        .map_err(|e| ApiError::new(ErrorCode::Conflict, e.to_string()))?;
    tracing::info!(job = job.id, env = %env, backup = job.backup.as_deref().unwrap_or(""), user = %caller.user, "backup queued");
    daemon.runner.wake();
    backup_job_outcome(daemon, job, wait, replies).await
}

/// A queued backup (or import) job: itself, or with `wait` its progress and then the
/// finished job with its backup (an error if it failed).
async fn backup_job_outcome(
    daemon: &Arc<Daemon>,
    job: JobRecord,
    wait: bool,
    replies: &mpsc::Sender<Reply>,
) -> Outcome {
    if !wait {
        return to_value(job);
    }
    let env = job.env.clone().unwrap_or_default();
    let finished = follow(daemon, job.id, replies).await?;
    let name = finished.backup.clone().unwrap_or_default();
    if finished.state != "succeeded" {
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
    let backup = find_backup(daemon, &env, &name).await?;
    to_value(json!({ "job": finished, "backup": backup }))
}

/// An import as asked for, before its checks.
struct ImportAsk {
    env: String,
    /// Parts whose files the client passed, in order.
    parts: Vec<String>,
    /// Parts to fetch from a URL.
    urls: std::collections::BTreeMap<String, String>,
    name: Option<String>,
    version: Option<String>,
}

/// What an import by someone other than root may contain, and the owner its trees
/// get (the caller's user and primary group). URLs are fetched with the daemon's own
/// network access and store credentials, and a PostgreSQL or MariaDB dump runs its
/// SQL as the database's configured user: both are root's alone.
fn check_user_import(
    env: &crate::config::EnvConfig,
    parts: &[String],
    urls: &std::collections::BTreeMap<String, String>,
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
        if let crate::config::PartSource::Database(db) = &target.source
            && matches!(
                db.kind,
                crate::config::DatabaseKind::Postgres | crate::config::DatabaseKind::Mariadb
            )
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
fn check_import_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("invalid import URL {text:?}: {e}"))?;
    match crate::import::URL_SCHEMES.contains(&url.scheme()) {
        true => Ok(()),
        false => Err(format!(
            "import URLs are http(s) or a store's (s3://, gs://, az://), not {}:// (pass a local file as PART=FILE)",
            url.scheme()
        )),
    }
}

/// The checks of an import request that need none of its files: run before the
/// server asks for them (`control/server.rs`), and again by the handler.
pub fn check_import(
    daemon: &Daemon,
    env: &str,
    parts: &[String],
    urls: &std::collections::BTreeMap<String, String>,
    version: Option<&str>,
) -> Result<(), ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::Invalid, message);
    known_env(daemon, env)?;
    let config = daemon.config();
    let env_config = config.env(env).expect("checked just above");
    let known: Vec<String> = env_config.parts().into_iter().map(|p| p.name).collect();
    let all: Vec<&String> = parts.iter().chain(urls.keys()).collect();
    if all.is_empty() {
        return Err(invalid(
            "an import needs at least one --part PART=FILE".into(),
        ));
    }
    for url in urls.values() {
        check_import_url(url).map_err(invalid)?;
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

/// Queues an import of the client's files (one per part) as a backup with trigger
/// `import`; the checks of the archives themselves run in the job (`jobs/import.rs`).
async fn import(
    daemon: &Arc<Daemon>,
    caller: &Caller,
    ask: ImportAsk,
    files: Vec<std::os::fd::OwnedFd>,
    wait: bool,
    replies: &mpsc::Sender<Reply>,
) -> Outcome {
    let invalid = |message: String| ApiError::new(ErrorCode::Invalid, message);
    let ImportAsk {
        env,
        parts,
        urls,
        name,
        version,
    } = ask;
    check_import(daemon, &env, &parts, &urls, version.as_deref())?;
    let config = daemon.config();
    let env_config = config.env(&env).expect("checked by check_import");
    if files.len() != parts.len() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "an import needs one file per part",
        ));
    }
    for (part, file) in parts.iter().zip(&files) {
        let stat = nix::sys::stat::fstat(file).map_err(|e| invalid(format!("{part}: {e}")))?;
        if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(invalid(format!(
                "the file for part {part} is not a regular file"
            )));
        }
    }
    let owner = match caller.is_unrestricted() {
        true => None,
        false => Some(check_user_import(env_config, &parts, &urls, caller)?),
    };
    if daemon.shutdown.is_cancelled() {
        return Err(ApiError::new(
            ErrorCode::ShuttingDown,
            "envsnapd is shutting down and takes no new jobs",
        ));
    }
    let name = name.unwrap_or_else(|| generated_name("import"));
    if !is_safe_name(&name) {
        return Err(invalid(format!(
            "invalid backup name {name:?}: use 1-64 of A-Z a-z 0-9 . _ - starting with a letter or digit"
        )));
    }
    // The sources are held before the job exists, so the runner always finds them.
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).expect("the operating system's random source failed");
    let token = hex::encode(random);
    let sources = parts
        .into_iter()
        .zip(files.into_iter().map(crate::jobs::import::Source::File))
        .chain(
            urls.into_iter()
                .map(|(part, url)| (part, crate::jobs::import::Source::Url(url))),
        )
        .collect();
    daemon.runner.hold_import(&token, sources);
    let args = crate::jobs::import::ImportArgs {
        version,
        token: token.clone(),
        owner,
    };
    let args = serde_json::to_string(&args).expect("serializes");
    let host = config.daemon.host.clone();
    let (user, env_c, name_c) = (caller.user.clone(), env.clone(), name.clone());
    let queued = daemon
        .catalog
        .blocking(move |c| Ok(c.queue_backup(&env_c, &name_c, &host, "import", &user, Some(&args))))
        .await;
    let job = match queued {
        Ok(Ok(job)) => job,
        failed => {
            drop(daemon.runner.take_import(&token));
            return Err(match failed {
                Ok(Err(e)) => ApiError::new(ErrorCode::Conflict, e.to_string()),
                Err(e) => e.into(),
                Ok(Ok(_)) => unreachable!("matched above"),
            });
        }
    };
    tracing::info!(job = job.id, env = %env, backup = %name, user = %caller.user, "import queued");
    daemon.runner.wake();
    backup_job_outcome(daemon, job, wait, replies).await
}

/// Sends progress while the job runs; returns its final record.
async fn follow(
    daemon: &Arc<Daemon>,
    id: i64,
    replies: &mpsc::Sender<Reply>,
) -> Result<JobRecord, ApiError> {
    let mut finished = daemon.runner.subscribe();
    let mut last_sent: Option<Progress> = None;
    loop {
        let job = find_job(daemon, id).await?;
        if job.is_finished() {
            return Ok(job);
        }
        let progress = daemon.runner.progress(id).unwrap_or(Progress {
            job: id,
            state: job.state.clone(),
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

async fn find_job(daemon: &Arc<Daemon>, id: i64) -> Result<JobRecord, ApiError> {
    daemon
        .catalog
        .blocking(move |c| c.get_job(id))
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no job {id}")))
}

async fn find_backup(
    daemon: &Arc<Daemon>,
    env: &str,
    name: &str,
) -> Result<crate::catalog::BackupRecord, ApiError> {
    let (env_c, name_c) = (env.to_owned(), name.to_owned());
    daemon
        .catalog
        .blocking(move |c| c.get_backup(&env_c, &name_c))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("environment {env} has no backup {name:?}"),
            )
        })
}

async fn job_cancel(daemon: &Arc<Daemon>, caller: &Caller, id: i64) -> Outcome {
    let job = find_job(daemon, id).await?;
    if job.is_finished() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("job {id} already {}", job.state),
        ));
    }
    if !daemon.runner.cancel(id) {
        // Still queued: it never started, so cancelling is just a state change.
        let activity = ActivityEntry::now(
            &caller.user,
            job.env.as_deref(),
            &job.kind,
            job.backup.as_deref(),
            "cancelled",
            Some("cancelled while queued".into()),
        );
        let cancelled = daemon
            .catalog
            .blocking(move |c| c.cancel_queued(id, &activity))
            .await?;
        if cancelled {
            if job.kind == "import" {
                // Its files are closed.
                let args = crate::jobs::import::args_of(daemon, id).await;
                drop(daemon.runner.take_import(&args.token));
            }
        } else {
            // It started in the meantime: stop it like any running job.
            daemon.runner.cancel(id);
        }
    }
    to_value(follow(daemon, id, &mpsc::channel(1).0).await?)
}

/// A restore as asked for, before its checks.
struct RestoreAsk {
    env: String,
    backup: String,
    from: Option<String>,
    map: std::collections::BTreeMap<String, String>,
    safety_backup: bool,
}

async fn restore(
    daemon: &Arc<Daemon>,
    caller: &Caller,
    ask: RestoreAsk,
    wait: bool,
    dry_run: bool,
    replies: &mpsc::Sender<Reply>,
) -> Outcome {
    if daemon.shutdown.is_cancelled() {
        return Err(ApiError::new(
            ErrorCode::ShuttingDown,
            "envsnapd is shutting down and takes no new jobs",
        ));
    }
    let (source_host, source_env) = match ask.from.as_deref() {
        None => (None, ask.env.clone()),
        Some(from) => match from.split_once('/') {
            Some((host, env)) => (Some(host.to_owned()), env.to_owned()),
            None => (None, from.to_owned()),
        },
    };
    for name in source_host.iter().chain([&source_env]) {
        if !is_safe_name(name) {
            return Err(ApiError::new(
                ErrorCode::Invalid,
                format!("invalid source {name:?} in --from"),
            ));
        }
    }
    let source = daemon
        .source_repo(source_host.as_deref())
        .await
        .map_err(|e| match e {
            RepoError::NoRepository { .. } => ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "host {} has no backups in this store",
                    source_host.as_deref().unwrap_or_default()
                ),
            ),
            other => other.into(),
        })?;
    let manifest = find_restorable(
        daemon,
        &source,
        source_host.as_deref(),
        &source_env,
        &ask.backup,
    )
    .await?;
    let config = daemon.config();
    let env_config = config.env(&ask.env).expect("checked by handle");
    let current = env_config
        .version
        .read(config.daemon.command_timeout)
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorCode::Failed,
                format!("cannot read the version of environment {}: {e}", ask.env),
            )
        })?;
    if current != manifest.meta.version {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "backup {} has version {} but environment {} is at version {current}: update the environment to version {} first, then restore",
                ask.backup, manifest.meta.version, ask.env, manifest.meta.version
            ),
        ));
    }
    let parts = map_parts(&manifest, env_config, &ask.map)?;
    if dry_run {
        return restore_plan(&source, &manifest, env_config, &parts).await;
    }
    let args = crate::jobs::restore::RestoreArgs {
        source_host,
        source_env: source_env.clone(),
        backup: ask.backup.clone(),
        manifest: manifest.id.clone(),
        parts,
        safety_backup: ask.safety_backup,
    };
    let args_json = serde_json::to_string(&args)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let (env, user, backup) = (ask.env.clone(), caller.user.clone(), ask.backup.clone());
    let job = daemon
        .catalog
        .blocking(move |c| Ok(c.queue_restore("restore", &env, &user, &backup, &args_json)))
        .await?
        .map_err(|e| match e {
            QueueError::Catalog(e) => e.into(),
            other => ApiError::new(ErrorCode::Conflict, other.to_string()),
        })?;
    let requested = ActivityEntry {
        time: Utc::now(),
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
    daemon
        .catalog
        .blocking(move |c| c.add_activity(&requested))
        .await?;
    tracing::info!(job = job.id, env = %ask.env, backup = %ask.backup, user = %caller.user, "restore queued");
    daemon.runner.wake();
    if !wait {
        return to_value(job);
    }
    let finished = follow(daemon, job.id, replies).await?;
    if finished.state != "succeeded" {
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

/// The backup's manifest, if it may be restored: it exists, is complete, has not expired.
async fn find_restorable(
    daemon: &Arc<Daemon>,
    source: &crate::repo::Repository,
    host: Option<&str>,
    env: &str,
    name: &str,
) -> Result<crate::repo::manifest::Manifest, ApiError> {
    let own = host.is_none_or(|h| h == daemon.repo.host());
    let missing = || {
        ApiError::new(
            ErrorCode::NotFound,
            format!("environment {env} has no backup {name:?}"),
        )
    };
    // Our own backups' expiry is the catalog's (`backup keep` changes it there).
    let (manifest, expires) = if own {
        let (env_c, name_c) = (env.to_owned(), name.to_owned());
        let record = daemon
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
        && expires <= Utc::now()
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
    manifest: &crate::repo::manifest::Manifest,
    env: &crate::config::EnvConfig,
    map: &std::collections::BTreeMap<String, String>,
) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::Invalid, message);
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
    let mut mapping = std::collections::BTreeMap::new();
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
        if let crate::config::PartSource::Database(db) = &target.source
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
    source: &crate::repo::Repository,
    manifest: &crate::repo::manifest::Manifest,
    env: &crate::config::EnvConfig,
    parts: &std::collections::BTreeMap<String, String>,
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
            crate::config::PartSource::Tree { path, exclude } => {
                let plan = source
                    .plan_tree_restore_excluding(manifest, from, path, exclude)
                    .await?;
                json!({ "part": from, "target": to, "path": path, "plan": plan })
            }
            crate::config::PartSource::Database(_) => {
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

/// One part of one backup, as a download or a link asks for it.
struct PartExport<'a> {
    env: &'a str,
    backup: &'a str,
    part: &'a str,
    format: Option<&'a str>,
}

impl PartExport<'_> {
    /// The backup's manifest and the format to write, checked.
    async fn resolve(
        &self,
        daemon: &Arc<Daemon>,
    ) -> Result<(crate::repo::manifest::Manifest, crate::download::Format), ApiError> {
        let manifest = find_restorable(daemon, &daemon.repo, None, self.env, self.backup).await?;
        let format = crate::download::choose_format(&manifest, self.part, self.format)?;
        Ok((manifest, format))
    }

    /// Records the export in the activity log as `action`, with its outcome.
    async fn log<T>(
        &self,
        daemon: &Arc<Daemon>,
        caller: &Caller,
        action: &str,
        result: &Result<T, crate::download::DownloadError>,
        describe: impl FnOnce(&T) -> String,
    ) {
        let part = self.part;
        let (outcome, detail) = match result {
            Ok(done) => ("succeeded", format!("part {part}: {}", describe(done))),
            Err(e) => ("failed", format!("part {part}: {e}")),
        };
        let entry = ActivityEntry::now(
            &caller.user,
            Some(self.env),
            action,
            Some(self.backup),
            outcome,
            Some(detail),
        );
        let _ = daemon
            .catalog
            .blocking(move |c| c.add_activity(&entry))
            .await;
    }
}

async fn backup_download(
    daemon: &Arc<Daemon>,
    caller: &Caller,
    what: PartExport<'_>,
    file: std::os::fd::OwnedFd,
) -> Outcome {
    let (manifest, format) = what.resolve(daemon).await?;
    let downloaded =
        crate::download::download(&daemon.repo, &manifest, what.part, format, file).await;
    what.log(daemon, caller, "download", &downloaded, |done| {
        format!("{:?}, {} bytes", done.format, done.bytes)
    })
    .await;
    to_value(downloaded?)
}

async fn backup_link(
    daemon: &Arc<Daemon>,
    caller: &Caller,
    what: PartExport<'_>,
    ttl: std::time::Duration,
) -> Outcome {
    let (manifest, format) = what.resolve(daemon).await?;
    let linked = crate::link::create(daemon, &manifest, what.part, format, ttl).await;
    what.log(daemon, caller, "link", &linked, |link| {
        format!("expires {}", link.expires.to_rfc3339())
    })
    .await;
    to_value(linked?)
}

async fn backup_keep(
    daemon: &Arc<Daemon>,
    caller: &Caller,
    env: String,
    name: String,
    until: Option<DateTime<Utc>>,
) -> Outcome {
    let backup = find_backup(daemon, &env, &name).await?;
    if backup.status != "completed" {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("backup {name} of {env} is still being created"),
        ));
    }
    if let Some(until) = until
        && until <= Utc::now()
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
    let (env_c, name_c) = (env.clone(), name.clone());
    daemon
        .catalog
        .blocking(move |c| {
            c.set_backup_expiry(&env_c, &name_c, until)?;
            c.add_activity(&activity)
        })
        .await?;
    to_value(find_backup(daemon, &env, &name).await?)
}

async fn backup_delete(
    daemon: &Arc<Daemon>,
    caller: &Caller,
    env: String,
    name: String,
) -> Outcome {
    let backup = find_backup(daemon, &env, &name).await?;
    if backup.status != "completed" {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("backup {name} of {env} is still being created"),
        ));
    }
    let manifest = match backup.manifest.as_deref() {
        Some(id) => Some(daemon.repo.load_manifest(&env, id).await?),
        None => None,
    };
    // The catalog first: a crash before the store is cleaned leaves a backup that a
    // catalog rebuild brings back, never a listed backup without data.
    let (env_c, name_c) = (env.clone(), name.clone());
    daemon
        .catalog
        .blocking(move |c| c.remove_backup(&env_c, &name_c))
        .await?;
    let report = daemon.repo.prune(manifest.as_slice()).await?;
    let activity = ActivityEntry::now(
        &caller.user,
        Some(&env),
        "delete",
        Some(&name),
        "succeeded",
        None,
    );
    daemon
        .catalog
        .blocking(move |c| c.add_activity(&activity))
        .await?;
    tracing::info!(env = %env, backup = %name, user = %caller.user, "backup deleted");
    to_value(json!({ "deleted": name, "prune": report }))
}

async fn verify(
    daemon: &Arc<Daemon>,
    env: String,
    backup: Option<String>,
    read_data: bool,
) -> Outcome {
    let mut manifests = Vec::new();
    let env_c = env.clone();
    let backups = daemon
        .catalog
        .blocking(move |c| c.list_backups(&env_c))
        .await?;
    for record in backups
        .iter()
        .filter(|b| backup.as_deref().is_none_or(|n| n == b.name))
    {
        if let Some(id) = record.manifest.as_deref() {
            manifests.push(daemon.repo.load_manifest(&env, id).await?);
        }
    }
    if let Some(name) = &backup
        && manifests.is_empty()
    {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("environment {env} has no completed backup {name:?}"),
        ));
    }
    to_value(daemon.repo.verify(&manifests, read_data).await?)
}

async fn catalog_rebuild(daemon: &Arc<Daemon>) -> Outcome {
    let report = daemon.repo.rebuild_index().await?;
    let manifests = daemon.repo.list_manifests(None).await?;
    let records: Vec<_> = manifests
        .iter()
        .map(crate::catalog::BackupRecord::from_manifest)
        .collect();
    daemon
        .catalog
        .blocking(move |c| {
            for record in &records {
                c.upsert_completed_backup(record)?;
            }
            Ok(())
        })
        .await?;
    to_value(report)
}
