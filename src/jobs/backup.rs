//! The backup job: every part of an environment into one backup, or nothing.
//!
//! The backup row was inserted `creating` when the job was queued. The job reads the
//! environment's version, writes each part (trees with the previous backup as parent,
//! databases through their native dump), commits (the manifest is the commit point),
//! then marks the backup `completed` and the job succeeded in one catalog transaction.
//! Any failure, or a cancel, aborts the write (deleting what it uploaded), removes the
//! backup from the list, records the error, and runs the failure hook.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;

use crate::catalog::{ActivityEntry, CompletedBackup, JobRecord, PartSize};
use crate::config::{EnvConfig, PartSource, PartSpec};
use crate::context::Context;
use crate::control::protocol::{JobState, Progress};
use crate::repo::RepoError;
use crate::repo::archiver::TreeOptions;
use crate::repo::manifest::{BackupMeta, Manifest};
use crate::repo::phases::PhaseTimer;
use crate::repo::writer::{BackupWriter, PartWriter};
use crate::sources;

/// How often a running backup publishes its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Parts written at once: a database dump runs beside a tree walk instead of after
/// it, and memory stays within two parts' buffers (a stream reads ahead up to 8 MiB,
/// a chunker holds 16 MiB).
const PARTS_AT_ONCE: usize = 2;

pub async fn run(ctx: &Arc<Context>, job: &JobRecord, cancel: CancellationToken) {
    let mut phases = PhaseTimer::start("backup.job");
    let env = job.env.clone().unwrap_or_default();
    let name = job.backup.clone().unwrap_or_default();
    let trigger = {
        let (env, name) = (env.clone(), name.clone());
        ctx.catalog
            .blocking(move |c| c.get_backup(&env, &name))
            .await
    };
    let trigger = trigger
        .ok()
        .flatten()
        .map_or_else(|| "manual".to_owned(), |b| b.trigger);
    let keep_until = {
        let id = job.id;
        ctx.catalog.blocking(move |c| c.job_args(id)).await
    };
    let keep_until = keep_until
        .ok()
        .flatten()
        .and_then(|args| serde_json::from_str::<BackupArgs>(&args).ok())
        .and_then(|args| args.keep_until);
    let request = BackupRequest {
        job: job.id,
        env: &env,
        name: &name,
        trigger: &trigger,
        user: &job.user,
        keep_until,
    };
    phases.lap("arguments");
    let outcome = make_backup(ctx, &request, &cancel).await;
    phases.lap("backup");
    finish(ctx, job, &env, &name, outcome).await;
    phases.lap("finish");
}

/// Records a backup job's outcome (an import's too): the backup `completed` and the
/// job succeeded in one transaction, or the backup removed and the job failed; then
/// retention, the log line and the success or failure hook.
pub(super) async fn finish(
    ctx: &Arc<Context>,
    job: &JobRecord,
    env: &str,
    name: &str,
    outcome: Result<Manifest, RepoError>,
) {
    let (env, name) = (env.to_owned(), name.to_owned());
    let (state, error) = match &outcome {
        Ok(_) => (JobState::Succeeded, None),
        Err(RepoError::Cancelled) => (JobState::Cancelled, Some("cancelled".to_owned())),
        Err(e) => (JobState::Failed, Some(e.to_string())),
    };
    let activity = ActivityEntry::now(
        &job.user,
        Some(&env),
        job.kind.as_str(),
        Some(&name),
        state.as_str(),
        error.clone(),
    );
    let (job_id, env_c, name_c) = (job.id, env.clone(), name.clone());
    let recorded = match outcome {
        Ok(manifest) => {
            let parts: Vec<PartSize> = crate::catalog::BackupRecord::from_manifest(&manifest).parts;
            ctx.catalog
                .blocking(move |c| {
                    c.finish_backup(
                        job_id,
                        &CompletedBackup {
                            env: &env_c,
                            name: &name_c,
                            manifest: &manifest.id,
                            version: &manifest.meta.version,
                            created: manifest.created,
                            completed: manifest.completed,
                            expires: manifest.meta.expires,
                            parts: &parts,
                        },
                        &activity,
                    )
                })
                .await
        }
        Err(_) => {
            let error = error.clone().unwrap_or_default();
            ctx.catalog
                .blocking(move |c| c.fail_backup(job_id, &env_c, &name_c, state, &error, &activity))
                .await
        }
    };
    if let Err(e) = recorded {
        tracing::error!(job = job.id, env = %env, backup = %name, error = %e, "cannot record the backup's outcome");
    }
    if error.is_none() {
        // Retention runs after each backup; it waits for writes in progress itself.
        let pruner = super::prune::Pruner::of(ctx);
        tokio::spawn(async move {
            if let Err(e) = pruner.prune("root", false).await {
                tracing::warn!(error = %e, "prune after backup failed");
            }
        });
    }
    match &error {
        None => tracing::info!(job = job.id, env = %env, backup = %name, "{} completed", job.kind),
        Some(e) => {
            tracing::warn!(job = job.id, env = %env, backup = %name, error = %e, "{} {state}", job.kind)
        }
    }
    run_hook(ctx, job, &env, &name, error.as_deref()).await;
}

/// A backup job's arguments, stored with it in the catalog.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct BackupArgs {
    /// The backup's own expiry instead of the environment's retention.
    pub keep_until: Option<chrono::DateTime<Utc>>,
}

/// What to back up, for whom: a backup job's own, or a restore's safety backup.
pub struct BackupRequest<'a> {
    /// The job whose progress this backup reports.
    pub job: i64,
    pub env: &'a str,
    pub name: &'a str,
    pub trigger: &'a str,
    pub user: &'a str,
    /// Overrides the environment's retention.
    pub keep_until: Option<chrono::DateTime<Utc>>,
}

/// Writes every part of the environment and commits the backup; the catalog is the
/// caller's business.
pub async fn make_backup(
    ctx: &Arc<Context>,
    request: &BackupRequest<'_>,
    cancel: &CancellationToken,
) -> Result<Manifest, RepoError> {
    let (env, name) = (request.env, request.name);
    let mut phases = PhaseTimer::start("backup");
    let config = ctx.config();
    let env_config = config
        .env(env)
        .ok_or_else(|| {
            RepoError::Pipeline(format!("environment {env} is no longer in the config"))
        })?
        .clone();
    let version = env_config
        .version
        .read(config.daemon.command_timeout)
        .await
        .map_err(|e| RepoError::Pipeline(format!("reading the version of {env}: {e}")))?;
    phases.lap("version");
    let parent = previous_manifest(ctx, env).await;
    phases.lap("parent");
    // The expiry as of now, for Object Lock: the new data is locked at least as long.
    let expires_about = expiry(request, &env_config, ctx.clock.now());
    let mut writer = ctx
        .repo
        .start_backup_expiring(cancel.clone(), expires_about)
        .await?;
    phases.lap("start");
    let written = write_parts(
        ctx,
        request.job,
        &env_config,
        parent.as_ref(),
        &mut writer,
        cancel,
    )
    .await;
    phases.lap("parts");
    if let Err(e) = written {
        writer.abort().await;
        return Err(if cancel.is_cancelled() {
            RepoError::Cancelled
        } else {
            e
        });
    }
    let expires = expiry(request, &env_config, ctx.clock.now());
    let committed = writer
        .commit(BackupMeta {
            env: env.to_owned(),
            name: name.to_owned(),
            version,
            trigger: request.trigger.to_owned(),
            user: request.user.to_owned(),
            expires,
        })
        .await;
    phases.lap("commit");
    phases.finish();
    committed
}

/// When a backup created at `created` expires: its own date, else the
/// environment's retention.
fn expiry(
    request: &BackupRequest<'_>,
    env: &EnvConfig,
    created: chrono::DateTime<Utc>,
) -> Option<chrono::DateTime<Utc>> {
    request.keep_until.or_else(|| {
        chrono::Duration::from_std(env.retention)
            .ok()
            .map(|r| created + r)
    })
}

/// The manifest of the environment's newest completed backup, if it can be read.
async fn previous_manifest(ctx: &Arc<Context>, env: &str) -> Option<Manifest> {
    let owned = env.to_owned();
    let last = ctx
        .catalog
        .blocking(move |c| c.last_backup(&owned))
        .await
        .ok()??;
    ctx.repo
        .load_manifest(env, last.manifest.as_deref()?)
        .await
        .ok()
}

/// Writes every part of the environment, [`PARTS_AT_ONCE`] at a time; the first
/// failure stops the others and is returned with its cause.
async fn write_parts(
    ctx: &Arc<Context>,
    job: i64,
    env: &EnvConfig,
    parent: Option<&Manifest>,
    writer: &mut BackupWriter,
    cancel: &CancellationToken,
) -> Result<(), RepoError> {
    let parts = env.parts();
    let progress = PartsProgress::new(ctx, job, writer.progress(), parts.len());
    let written = {
        // Dropped before `explain`, which drains the pipeline.
        let part_writer = writer.part_writer()?;
        part_writer.reserve(parts.iter().map(|p| p.name.as_str()));
        let took = |name: &str| parent?.part(name)?.duration_ms;
        let ordered = write_order(&parts, took).into_iter().map(Ok);
        let work = futures::stream::iter(ordered).try_for_each_concurrent(PARTS_AT_ONCE, |part| {
            write_part(ctx, &part_writer, parent, part, cancel, &progress)
        });
        let ticker = async {
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                progress.publish();
            }
        };
        tokio::select! {
            result = work => result,
            () = ticker => unreachable!("the ticker never ends"),
        }
    };
    match written {
        Ok(()) => {
            progress.publish();
            Ok(())
        }
        Err(e) => Err(writer.explain(e).await),
    }
}

/// The order parts start in, [`PARTS_AT_ONCE`] at a time: longest first, so that the
/// short ones fill in beside the long ones instead of a long one starting last.
/// How long a part takes is what it took in the parent backup; a part without one
/// (a first backup, a new part) starts before those with one, databases first (a
/// dump is read whole every time, while a tree skips its unchanged files).
fn write_order(parts: &[PartSpec], took: impl Fn(&str) -> Option<u64>) -> Vec<&PartSpec> {
    let is_tree = |part: &PartSpec| matches!(part.source, PartSource::Tree { .. });
    let mut ordered: Vec<&PartSpec> = parts.iter().collect();
    // Stable: parts that compare equal keep the environment's order.
    ordered.sort_by_key(|part| match took(&part.name) {
        None => (false, is_tree(part), std::cmp::Reverse(0)),
        Some(ms) => (true, false, std::cmp::Reverse(ms)),
    });
    ordered
}

/// Writes one part: a tree with the parent backup's tree beside it, or a database
/// through its native dump.
async fn write_part(
    ctx: &Arc<Context>,
    writer: &PartWriter,
    parent: Option<&Manifest>,
    part: &PartSpec,
    cancel: &CancellationToken,
    progress: &PartsProgress<'_>,
) -> Result<(), RepoError> {
    let mut phases = PhaseTimer::start("backup.part");
    let started = std::time::Instant::now();
    progress.started(&part.name);
    match &part.source {
        PartSource::Tree { path, exclude } => {
            let options = TreeOptions {
                parent: parent.and_then(|m| m.part(&part.name)).cloned(),
                exclude: exclude.clone(),
            };
            writer.add_tree(&part.name, path.clone(), options).await?;
        }
        PartSource::Database(db) => {
            let scratch = ctx.config().daemon.state_dir.join("tmp");
            sources::backup_database(writer, &part.name, db, &scratch, cancel)
                .await
                .map_err(|e| match e {
                    sources::SourceError::Repo(e) => e,
                    other => RepoError::Source(other.to_string()).in_part(&part.name),
                })?;
        }
    }
    let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    writer.amend(&part.name, |record| record.duration_ms = Some(took));
    progress.finished(&part.name);
    phases.lap(&part.name);
    Ok(())
}

/// A backup's progress across the parts being written side by side.
struct PartsProgress<'a> {
    ctx: &'a Arc<Context>,
    job: i64,
    bytes: Arc<AtomicU64>,
    started: std::time::Instant,
    total: u32,
    /// Parts done, and the names of those being written.
    state: Mutex<(u32, Vec<String>)>,
}

impl<'a> PartsProgress<'a> {
    fn new(ctx: &'a Arc<Context>, job: i64, bytes: Arc<AtomicU64>, total: usize) -> Self {
        PartsProgress {
            ctx,
            job,
            bytes,
            started: std::time::Instant::now(),
            total: total as u32,
            state: Mutex::new((0, Vec::new())),
        }
    }

    fn started(&self, part: &str) {
        self.state
            .lock()
            .expect("progress lock")
            .1
            .push(part.to_owned());
        self.publish();
    }

    fn finished(&self, part: &str) {
        let mut state = self.state.lock().expect("progress lock");
        state.0 += 1;
        state.1.retain(|p| p != part);
        drop(state);
        self.publish();
    }

    fn publish(&self) {
        let (done, current) = {
            let state = self.state.lock().expect("progress lock");
            (state.0, state.1.join(", "))
        };
        let bytes = self.bytes.load(Ordering::Relaxed);
        let rate = (bytes as f64 / self.started.elapsed().as_secs_f64().max(0.001)) as u64;
        self.ctx.runner.set_progress(Progress {
            job: self.job,
            state: JobState::Running,
            bytes_done: bytes,
            parts_done: done,
            parts_total: self.total,
            part: current,
            rate,
            limit: self.ctx.repo.store().limits_now().0,
        });
    }
}

/// Runs `on_success` / `on_failure` (the environment's, else the daemon's).
pub(super) async fn run_hook(
    ctx: &Arc<Context>,
    job: &JobRecord,
    env: &str,
    backup: &str,
    error: Option<&str>,
) {
    let config = ctx.config();
    let env_config = config.env(env);
    let pick = |own: Option<&Vec<String>>, global: &Vec<String>| -> Vec<String> {
        own.filter(|c| !c.is_empty()).unwrap_or(global).clone()
    };
    let commands = match error {
        None => pick(env_config.map(|e| &e.on_success), &config.daemon.on_success),
        Some(_) => pick(env_config.map(|e| &e.on_failure), &config.daemon.on_failure),
    };
    let mut vars = BTreeMap::new();
    vars.insert("ENVSNAP_ENV".to_owned(), env.to_owned());
    vars.insert("ENVSNAP_JOB".to_owned(), job.id.to_string());
    vars.insert("ENVSNAP_KIND".to_owned(), job.kind.to_string());
    vars.insert("ENVSNAP_BACKUP".to_owned(), backup.to_owned());
    vars.insert(
        "ENVSNAP_OUTCOME".to_owned(),
        if error.is_some() {
            "failed"
        } else {
            "succeeded"
        }
        .to_owned(),
    );
    vars.insert(
        "ENVSNAP_ERROR".to_owned(),
        error.unwrap_or_default().to_owned(),
    );
    for command in &commands {
        if let Err(e) = crate::commands::run(command, &vars, config.daemon.command_timeout).await {
            tracing::warn!(job = job.id, env, error = %e, "hook failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(names: &[&str]) -> Vec<PartSpec> {
        // A database part's source: the quick-start config's SQLite database.
        let demo = crate::config::Config::embedded_default(std::path::Path::new("/srv"));
        let database = (demo.env("demo").unwrap().parts().into_iter())
            .find(|p| matches!(p.source, PartSource::Database(_)))
            .unwrap()
            .source;
        (names.iter())
            .map(|name| PartSpec {
                name: (*name).to_owned(),
                source: match name.starts_with("database:") {
                    true => database.clone(),
                    false => PartSource::Tree {
                        path: "/srv".into(),
                        exclude: Vec::new(),
                    },
                },
            })
            .collect()
    }

    fn order(parts: &[PartSpec], took: &[(&str, u64)]) -> Vec<String> {
        let took = |name: &str| took.iter().find(|(n, _)| *n == name).map(|(_, ms)| *ms);
        write_order(parts, took)
            .into_iter()
            .map(|p| p.name.clone())
            .collect()
    }

    #[test]
    fn the_longest_parts_start_first_unknown_ones_before_them() {
        let env = parts(&["code", "files:db", "files:files", "database:app"]);
        // A first backup: databases first, then the environment's order.
        assert_eq!(
            order(&env, &[]),
            ["database:app", "code", "files:db", "files:files"]
        );
        // The churn scenario's day 1: the files tree, then the database beside it,
        // then the short db/ mount in the lane the database frees.
        let took = [
            ("code", 40),
            ("files:db", 485),
            ("files:files", 1736),
            ("database:app", 1216),
        ];
        assert_eq!(
            order(&env, &took),
            ["files:files", "database:app", "files:db", "code"]
        );
        // A part new since the parent starts before the known ones.
        assert_eq!(
            order(&env, &took[1..]),
            ["code", "files:files", "database:app", "files:db"]
        );
    }
}
