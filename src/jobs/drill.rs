//! The drill job: a backup restored into a sandbox and checked, never touching the
//! environment (see `drill/` for the design).
//!
//! Sequence: the backup's manifest → a sandbox with room for it → every part
//! restored and checked by its engine, trees and databases in two lanes at once (a
//! failed part is recorded and the others are still checked, so one drill shows
//! everything that is wrong) → the operator's
//! checks in the scratch databases → the operator's commands with the sandbox in
//! their environment → scratch servers stopped → warnings against the previous
//! drill → the report written to the store next to the manifest, then to the catalog
//! with the job's end and the activity entry → the success or failure hook. The
//! sandbox is removed, or kept with `--keep` (or `keep_sandbox_on_failure`).
//! Cancelling stops at once: the scratch servers are killed with the step that
//! started them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::backup::run_hook;
use crate::catalog::{ActivityEntry, JobKind, JobRecord, JobState};
use crate::config::{DrillConfig, EnvConfig};
use crate::context::Context;
use crate::control::protocol::Progress;
use crate::drill::report::{self, FAILED, PASSED, PartReport, Report, StepReport};
use crate::drill::sandbox::{Sandbox, SandboxError, check_room, room_needed};
use crate::message::one_line;
use crate::repo::RepoError;
use crate::repo::manifest::{Manifest, PartLayout, PartRecord};
use crate::sources::scratch::{self, Scratch, ScratchSpec, variable_name};

/// The job's arguments, stored with it in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillArgs {
    /// Always `None` (this host's own backups); prune reads it with the two below to
    /// leave the drilled backup alone while the drill runs.
    pub source_host: Option<String>,
    pub source_env: String,
    pub backup: String,
    /// The backup's manifest id.
    pub manifest: String,
    /// Keep the sandbox afterwards.
    pub keep: bool,
}

/// What checking one part left for the checks and commands.
enum Checked {
    /// A restored tree: the variable naming its directory.
    Tree(BTreeMap<String, String>),
    /// A loaded database, its scratch server running.
    Database(Box<Scratch>),
    Failed,
}

/// What stopped a drill before its parts were all checked.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("the job's arguments are missing or unreadable")]
    NoArguments,
    #[error("environment {0} is no longer in the config")]
    EnvironmentGone(String),
    #[error("reading backup {backup}: {source}")]
    Manifest { backup: String, source: RepoError },
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("cancelled")]
    Cancelled,
}

/// A running drill: its context, job and the report it fills in.
struct Drill<'a> {
    ctx: &'a Arc<Context>,
    job: &'a JobRecord,
    report: Report,
    timer: Instant,
    manifest: Option<Manifest>,
}

pub async fn run(ctx: &Arc<Context>, job: &JobRecord, cancel: CancellationToken) {
    let mut drill = Drill::new(ctx, job);
    let args = super::args::job_args::<DrillArgs>(ctx, job.id).await;
    let result = match args {
        Some(args) => drill.run(&args, &cancel).await,
        None => Err(DrillError::NoArguments),
    };
    drill.finish(result).await;
}

impl<'a> Drill<'a> {
    fn new(ctx: &'a Arc<Context>, job: &'a JobRecord) -> Self {
        let now = ctx.clock.now();
        Drill {
            ctx,
            job,
            report: Report {
                id: job.id,
                host: ctx.repo.host().to_owned(),
                env: job.env.clone().unwrap_or_default(),
                backup: job.backup.clone().unwrap_or_default(),
                manifest: String::new(),
                user: job.user.clone(),
                started: now,
                finished: now,
                duration_seconds: 0.0,
                outcome: FAILED.to_owned(),
                error: None,
                parts: Vec::new(),
                checks: Vec::new(),
                commands: Vec::new(),
                warnings: Vec::new(),
                sandbox: None,
            },
            timer: Instant::now(),
            manifest: None,
        }
    }

    async fn run(
        &mut self,
        args: &DrillArgs,
        cancel: &CancellationToken,
    ) -> Result<(), DrillError> {
        let env = self.report.env.clone();
        let config = self.ctx.config();
        let env_config = config
            .env(&env)
            .ok_or_else(|| DrillError::EnvironmentGone(env.clone()))?
            .clone();
        let manifest = self
            .ctx
            .repo
            .load_manifest(&args.source_env, &args.manifest)
            .await
            .map_err(|source| DrillError::Manifest {
                backup: args.backup.clone(),
                source,
            })?;
        self.report.manifest = manifest.id.clone();
        self.manifest = Some(manifest.clone());
        let sandbox = Sandbox::create(&config.daemon.state_dir, self.job.id)?;
        let result = match check_room(sandbox.path(), room_needed(&manifest)) {
            Err(e) => Err(e.into()),
            Ok(()) => tokio::select! {
                () = self.steps(&manifest, &sandbox, &env_config) => Ok(()),
                () = cancel.cancelled() => Err(DrillError::Cancelled),
            },
        };
        let failed = result.is_err() || self.report.first_failure().is_some();
        if args.keep || (failed && env_config.drill.keep_sandbox_on_failure) {
            self.report.sandbox = Some(sandbox.keep().display().to_string());
        } else {
            sandbox.remove().await;
        }
        result
    }

    /// Every part restored and checked, then the operator's checks and commands.
    async fn steps(&mut self, manifest: &Manifest, sandbox: &Sandbox, env: &EnvConfig) {
        let mut vars = self.base_vars(sandbox.path());
        let mut scratches: Vec<(String, Scratch)> = Vec::new();
        for (entry, checked) in self.check_parts(manifest, sandbox).await {
            match checked {
                Checked::Tree(tree_vars) => vars.extend(tree_vars),
                Checked::Database(loaded) => {
                    vars.extend(loaded.variables());
                    scratches.push((entry.part.clone(), *loaded));
                }
                Checked::Failed => {}
            }
            self.report.parts.push(entry);
        }
        let total = self.report.parts.len();
        self.progress(total, total, "checks");
        self.checks(&scratches, &env.drill).await;
        self.commands(&vars, &env.drill).await;
        for (_, loaded) in scratches {
            loaded.stop().await;
        }
    }

    /// Checks every part, in two lanes at once: the trees one after the other (disk
    /// and hashing) beside the databases one after the other (their engines), so a
    /// drill keeps both cores busy. Results come back in the manifest's order.
    async fn check_parts(
        &self,
        manifest: &Manifest,
        sandbox: &Sandbox,
    ) -> Vec<(PartReport, Checked)> {
        let parts: Vec<PartRecord> = manifest.main_parts().cloned().collect();
        let done = AtomicUsize::new(0);
        let lane = |layout: PartLayout| {
            let (parts, done) = (&parts, &done);
            async move {
                let mut results = Vec::new();
                for (index, part) in parts.iter().enumerate().filter(|(_, p)| p.layout == layout) {
                    self.progress(done.load(Ordering::Relaxed), parts.len(), &part.part);
                    results.push((index, self.check_part(manifest, part, sandbox).await));
                    done.fetch_add(1, Ordering::Relaxed);
                }
                results
            }
        };
        let (trees, databases) = tokio::join!(lane(PartLayout::Tree), lane(PartLayout::Stream));
        let mut results: Vec<_> = trees.into_iter().chain(databases).collect();
        results.sort_by_key(|(index, _)| *index);
        results.into_iter().map(|(_, result)| result).collect()
    }

    async fn check_part(
        &self,
        manifest: &Manifest,
        part: &PartRecord,
        sandbox: &Sandbox,
    ) -> (PartReport, Checked) {
        let timer = Instant::now();
        let mut entry = PartReport {
            part: part.part.clone(),
            kind: "tree".to_owned(),
            outcome: PASSED.to_owned(),
            seconds: 0.0,
            size: part.size,
            tree: None,
            database: None,
            keys_at_backup: part.keys,
            error: None,
        };
        let limit = self
            .ctx
            .config()
            .env(&self.report.env)
            .map_or(DrillConfig::default().load_timeout, |e| {
                e.drill.load_timeout
            });
        let work = async {
            match part.layout {
                PartLayout::Tree => self
                    .tree(manifest, part, sandbox, &mut entry)
                    .await
                    .map(Checked::Tree),
                PartLayout::Stream => self
                    .database(manifest, part, sandbox, &mut entry)
                    .await
                    .map(|loaded| Checked::Database(Box::new(loaded))),
            }
        };
        // Dropping the work on time-out kills what it started (the scratch server).
        let checked = tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(format!(
                "not restored and checked within drill.load_timeout ({limit:?})"
            ))
        });
        entry.seconds = timer.elapsed().as_secs_f64();
        match checked {
            Ok(checked) => (entry, checked),
            Err(e) => {
                entry.outcome = FAILED.to_owned();
                entry.error = Some(one_line(&e));
                (entry, Checked::Failed)
            }
        }
    }

    /// A tree restored as a restore would, then checked entry by entry; the
    /// variable that tells commands where it is.
    async fn tree(
        &self,
        manifest: &Manifest,
        part: &PartRecord,
        sandbox: &Sandbox,
        entry: &mut PartReport,
    ) -> Result<BTreeMap<String, String>, String> {
        let dir = sandbox.part_dir(&part.part).map_err(|e| e.to_string())?;
        let repo = &self.ctx.repo;
        repo.restore_tree(manifest, &part.part, &dir)
            .await
            .map_err(|e| e.to_string())?;
        let checked = repo
            .check_restored_tree(manifest, &part.part, &dir)
            .await
            .map_err(|e| e.to_string())?;
        entry.tree = Some(checked);
        Ok(BTreeMap::from([(
            format!("ENVSNAP_DRILL_{}", variable_name(&part.part)),
            dir.display().to_string(),
        )]))
    }

    async fn database(
        &self,
        manifest: &Manifest,
        part: &PartRecord,
        sandbox: &Sandbox,
        entry: &mut PartReport,
    ) -> Result<Scratch, String> {
        let kind = crate::sources::kind_for_format(&part.format)
            .ok_or_else(|| format!("unknown dump format {:?}", part.format))?;
        entry.kind = kind.to_string();
        let dir = sandbox.part_dir(&part.part).map_err(|e| e.to_string())?;
        let config = self.ctx.config();
        let run_as = scratch::drill_user(config.daemon.drill_user.as_deref());
        let env = config.env(&self.report.env);
        let spec = ScratchSpec {
            repo: &self.ctx.repo,
            manifest,
            part: &part.part,
            kind,
            dir: &dir,
            run_as: &run_as,
            timeout: env.map_or(DrillConfig::default().timeout, |e| e.drill.timeout),
        };
        let loaded = scratch::load(&spec).await.map_err(|e| e.to_string())?;
        entry.database = Some(loaded.figures.clone());
        Ok(loaded)
    }

    /// The operator's SQL checks, each in its database; a failure names the check.
    async fn checks(&mut self, scratches: &[(String, Scratch)], drill: &DrillConfig) {
        for (database, queries) in &drill.checks {
            let part = format!("database:{database}");
            let loaded = scratches.iter().find(|(p, _)| *p == part).map(|(_, s)| s);
            for sql in queries {
                let timer = Instant::now();
                let result = match loaded {
                    Some(loaded) => loaded
                        .check(sql, drill.timeout)
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err(format!("cannot run: {part} was not loaded")),
                };
                self.report
                    .checks
                    .push(step(format!("{database}: {sql}"), timer, result));
            }
        }
    }

    async fn commands(&mut self, vars: &BTreeMap<String, String>, drill: &DrillConfig) {
        for command in &drill.commands {
            let timer = Instant::now();
            let result = crate::commands::run(command, vars, drill.timeout)
                .await
                .map(drop)
                .map_err(|e| e.problem);
            self.report
                .commands
                .push(step(command.clone(), timer, result));
        }
    }

    fn base_vars(&self, sandbox: &Path) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "ENVSNAP_DRILL_DIR".to_owned(),
                sandbox.display().to_string(),
            ),
            ("ENVSNAP_ENV".to_owned(), self.report.env.clone()),
            ("ENVSNAP_JOB".to_owned(), self.job.id.to_string()),
            ("ENVSNAP_KIND".to_owned(), JobKind::Drill.to_string()),
            ("ENVSNAP_BACKUP".to_owned(), self.report.backup.clone()),
        ])
    }

    fn progress(&self, done: usize, total: usize, part: &str) {
        self.ctx.runner.set_progress(Progress {
            job: self.job.id,
            state: JobState::Running,
            parts_done: done as u32,
            parts_total: total as u32,
            part: part.to_owned(),
            ..Default::default()
        });
    }

    /// The outcome, the warnings, the report in the store and the catalog, the hook.
    async fn finish(mut self, result: Result<(), DrillError>) {
        let state = match &result {
            Err(DrillError::Cancelled) => JobState::Cancelled,
            Err(_) => JobState::Failed,
            Ok(()) if self.report.first_failure().is_some() => JobState::Failed,
            Ok(()) => JobState::Succeeded,
        };
        self.report.error = match result {
            Err(e) => Some(one_line(&e.to_string())),
            Ok(()) => self.report.first_failure(),
        };
        self.report.outcome = if state == JobState::Succeeded {
            PASSED
        } else {
            FAILED
        }
        .to_owned();
        self.report.finished = self.ctx.clock.now();
        self.report.duration_seconds = self.timer.elapsed().as_secs_f64();
        self.report.warnings = self.warnings().await;
        self.store_report().await;
        self.record(state).await;
        let (env, backup) = (&self.report.env, &self.report.backup);
        match &self.report.error {
            None => {
                tracing::info!(job = self.job.id, env = %env, backup = %backup, warnings = self.report.warnings.len(), "drill passed")
            }
            Some(e) => {
                tracing::error!(job = self.job.id, env = %env, backup = %backup, error = %e, "drill failed")
            }
        }
        run_hook(
            self.ctx,
            self.job,
            env,
            backup,
            self.report.error.as_deref(),
        )
        .await;
    }

    async fn warnings(&self) -> Vec<String> {
        let env = self.report.env.clone();
        let previous = self
            .ctx
            .catalog
            .blocking(move |c| c.last_drill(&env))
            .await
            .ok()
            .flatten()
            .and_then(|d| serde_json::from_value::<Report>(d.report).ok());
        let shrink = self
            .ctx
            .config()
            .env(&self.report.env)
            .map_or(DrillConfig::default().shrink_warning, |e| {
                e.drill.shrink_warning
            });
        report::warnings(&self.report.parts, previous.as_ref(), shrink)
    }

    /// Writes the report next to the backup's manifest; a failure is a warning in
    /// the catalog's copy (the drill's outcome stands).
    async fn store_report(&mut self) {
        let Some(manifest) = &self.manifest else {
            return;
        };
        let json = serde_json::to_vec_pretty(&self.report).expect("a report serializes");
        if let Err(e) = self
            .ctx
            .repo
            .put_drill_report(manifest, self.job.id, json)
            .await
        {
            tracing::warn!(job = self.job.id, error = %e, "cannot store the drill's report");
            self.report
                .warnings
                .push(format!("the report could not be written to the store: {e}"));
        }
    }

    async fn record(&self, state: JobState) {
        let report = &self.report;
        let record = report.to_record();
        let detail = report.error.clone().or_else(|| {
            (!report.warnings.is_empty()).then(|| {
                format!(
                    "{} warnings: {}",
                    report.warnings.len(),
                    report.warnings.join("; ")
                )
            })
        });
        let activity = ActivityEntry::now(
            &report.user,
            Some(&report.env),
            "drill",
            Some(&report.backup),
            state.as_str(),
            detail,
        );
        let recorded = self
            .ctx
            .catalog
            .blocking(move |c| c.finish_drill(&record, state, &activity))
            .await;
        if let Err(e) = recorded {
            tracing::error!(job = self.job.id, error = %e, "cannot record the drill's outcome");
        }
    }
}

fn step(name: String, timer: Instant, result: Result<(), String>) -> StepReport {
    StepReport {
        name,
        outcome: if result.is_ok() { PASSED } else { FAILED }.to_owned(),
        seconds: timer.elapsed().as_secs_f64(),
        error: result.err().as_deref().map(one_line),
    }
}
