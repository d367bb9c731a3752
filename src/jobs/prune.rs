//! Retention applied: expired backups leave the catalog and the store.
//!
//! For every environment with backups, `retention::plan` decides (expiry, the newest
//! backup, backups active jobs use, count-based keeps). The pruned backups leave the
//! catalog first, then their manifests are deleted and the data no other backup needs
//! is reclaimed (`Repository::prune`); a crash in between leaves a backup that a
//! catalog rebuild brings back, never a listed backup without data. Each pruned backup
//! gets an activity-log entry. Runs on demand (`envsnapctl prune`), after each
//! successful backup, and daily.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::catalog::{ActivityEntry, BackupRecord, Catalog, CatalogError};
use crate::clock::Clock;
use crate::config::LiveConfig;
use crate::context::Context;
use crate::repo::phases::PhaseTimer;
use crate::repo::prune::PruneReport;
use crate::repo::{RepoError, Repository};
use crate::retention::{self, Candidate, Decision, KeepCounts};

/// How often pruning runs without being asked.
const DAILY: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Serialize)]
pub struct PruneOutcome {
    pub dry_run: bool,
    /// Per environment, what was (or would be) kept and pruned, and why.
    pub plans: BTreeMap<String, Vec<Decision>>,
    pub pruned: Vec<String>,
    /// What the store reclaimed (absent on a dry run).
    pub store: Option<PruneReport>,
    /// Under Object Lock, on a dry run: the objects no backup needs that wait for
    /// their lock to pass (a prune then deletes them), and when the first passes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for_lock: Option<crate::repo::immutable::LockWait>,
}

/// What pruning works with; cheap to clone.
#[derive(Clone)]
pub struct Pruner {
    pub config: LiveConfig,
    pub catalog: Catalog,
    pub repo: Repository,
    pub clock: Clock,
}

/// Why a prune stopped. What it removed before is consistent (see the module doc).
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// What retention decided, per environment.
#[derive(Default)]
struct Planned {
    plans: BTreeMap<String, Vec<Decision>>,
    doomed: Vec<Doomed>,
    /// Backups kept past their expiry (count-based keeps, the newest, in use):
    /// under Object Lock, their locks follow (`Repository::keep_locked`).
    kept_past_expiry: Vec<(String, String)>,
}

/// A backup retention gave up, with what removing it needs.
struct Doomed {
    env: String,
    name: String,
    manifest: Option<String>,
    expires: Option<chrono::DateTime<chrono::Utc>>,
}

impl Pruner {
    pub fn of(ctx: &Context) -> Self {
        Pruner {
            config: ctx.config.clone(),
            catalog: ctx.catalog.clone(),
            repo: ctx.repo.clone(),
            clock: ctx.clock.clone(),
        }
    }

    /// Applies retention now on behalf of `user` (or only plans it on a dry run).
    pub async fn prune(&self, user: &str, dry_run: bool) -> Result<PruneOutcome, PruneError> {
        let mut phases = PhaseTimer::start("retention");
        let Planned {
            plans,
            doomed,
            kept_past_expiry,
        } = self.plan().await?;
        phases.lap("plan");
        let pruned: Vec<String> = doomed
            .iter()
            .map(|d| format!("{}/{}", d.env, d.name))
            .collect();
        if dry_run {
            return Ok(PruneOutcome {
                dry_run,
                plans,
                pruned,
                store: None,
                waiting_for_lock: self.repo.waiting_for_lock().await?,
            });
        }
        let report = self.remove(user, &doomed).await?;
        phases.lap("remove");
        // After the sweep, which stops lengthening what no backup needs any more.
        for (env, id) in &kept_past_expiry {
            self.repo.keep_locked(env, id).await?;
        }
        phases.finish();
        if !pruned.is_empty() {
            tracing::info!(
                pruned = pruned.len(),
                bytes_freed = report.bytes_freed,
                "expired backups pruned"
            );
        }
        Ok(PruneOutcome {
            dry_run,
            plans,
            pruned,
            store: Some(report),
            waiting_for_lock: None,
        })
    }

    /// Retention's decisions for every environment with backups, and the backups
    /// they give up.
    async fn plan(&self) -> Result<Planned, PruneError> {
        let config = self.config.get();
        let now = self.clock.now();
        let (in_use, envs) = self
            .catalog
            .blocking(|c| Ok((c.backups_in_use()?, c.backup_envs()?)))
            .await?;
        let in_use: HashSet<(String, String)> = in_use.into_iter().collect();
        let mut planned = Planned::default();
        for env in envs {
            let keep = config.env(&env).map_or(KeepCounts::default(), |e| e.keep);
            let env_c = env.clone();
            let backups = self
                .catalog
                .blocking(move |c| c.list_backups(&env_c))
                .await?;
            let candidates: Vec<Candidate> = backups
                .iter()
                .map(|b| Candidate {
                    name: b.name.clone(),
                    created: b.created,
                    expires: b.expires,
                    completed: b.status == "completed",
                    in_use: in_use.contains(&(env.clone(), b.name.clone())),
                })
                .collect();
            let mut plan = retention::plan(&candidates, keep, now, config.daemon.timezone);
            self.keep_locked(&env, &backups, &mut plan).await?;
            for decision in &plan {
                let record = backups
                    .iter()
                    .find(|b| b.name == decision.name)
                    .expect("planned from this list");
                if !decision.keep {
                    planned.doomed.push(Doomed {
                        env: env.clone(),
                        name: record.name.clone(),
                        manifest: record.manifest.clone(),
                        expires: record.expires,
                    });
                } else if let (Some(id), Some(expires)) = (&record.manifest, record.expires)
                    && expires <= now
                {
                    planned.kept_past_expiry.push((env.clone(), id.clone()));
                }
            }
            planned.plans.insert(env, plan);
        }
        Ok(planned)
    }

    /// Under Object Lock, a backup retention gives up stays while its manifest is
    /// locked (`locked until ...`): the store would only hide it.
    async fn keep_locked(
        &self,
        env: &str,
        backups: &[BackupRecord],
        plan: &mut [Decision],
    ) -> Result<(), PruneError> {
        if self.repo.lock_policy().is_none() {
            return Ok(());
        }
        for decision in plan.iter_mut().filter(|d| !d.keep) {
            let record = backups.iter().find(|b| b.name == decision.name);
            let Some(id) = record.and_then(|b| b.manifest.as_deref()) else {
                continue;
            };
            if let Some(until) = self.repo.manifest_locked_until(env, id).await? {
                decision.keep = true;
                decision.reason = format!(
                    "locked until {}",
                    until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
            }
        }
        Ok(())
    }

    /// The backups leave the catalog (one activity entry each), then the store
    /// reclaims what no other backup needs.
    async fn remove(&self, user: &str, doomed: &[Doomed]) -> Result<PruneReport, PruneError> {
        let mut manifests = Vec::new();
        for Doomed {
            env,
            name,
            manifest,
            expires,
        } in doomed
        {
            if let Some(id) = manifest {
                match self.repo.load_manifest(env, id).await {
                    Ok(manifest) => manifests.push(manifest),
                    Err(e) => {
                        tracing::warn!(env = %env, backup = %name, error = %e, "manifest of an expired backup unreadable; removing the entry")
                    }
                }
            }
            let detail = expires.map(|e| format!("expired at {}", e.to_rfc3339()));
            let entry =
                ActivityEntry::now(user, Some(env), "prune", Some(name), "succeeded", detail);
            let (env, name) = (env.clone(), name.clone());
            self.catalog
                .blocking(move |c| {
                    c.remove_backup(&env, &name)?;
                    c.add_activity(&entry)
                })
                .await?;
        }
        Ok(self.repo.prune(&manifests).await?)
    }
}

/// Prunes once now (after a start-up) and then every day, until shutdown.
pub async fn daily(pruner: Pruner, shutdown: CancellationToken) {
    loop {
        if let Err(e) = pruner.prune("root", false).await {
            tracing::error!(error = %e, "daily prune failed");
        }
        tokio::select! {
            () = tokio::time::sleep(DAILY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
