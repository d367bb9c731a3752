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
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use crate::catalog::ActivityEntry;
use crate::daemon::Daemon;
use crate::repo::prune::PruneReport;
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
}

pub async fn prune(
    daemon: &Arc<Daemon>,
    user: &str,
    dry_run: bool,
) -> Result<PruneOutcome, String> {
    let config = daemon.config();
    let now = Utc::now();
    let (in_use, envs) = daemon
        .catalog
        .blocking(|c| Ok((c.backups_in_use()?, c.backup_envs()?)))
        .await
        .map_err(|e| e.to_string())?;
    let in_use: HashSet<(String, String)> = in_use.into_iter().collect();
    let mut plans = BTreeMap::new();
    let mut doomed = Vec::new();
    for env in envs {
        let keep = config.env(&env).map_or(KeepCounts::default(), |e| e.keep);
        let env_c = env.clone();
        let backups = daemon
            .catalog
            .blocking(move |c| c.list_backups(&env_c))
            .await
            .map_err(|e| e.to_string())?;
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
        let plan = retention::plan(&candidates, keep, now, config.daemon.timezone);
        for decision in plan.iter().filter(|d| !d.keep) {
            let record = backups
                .iter()
                .find(|b| b.name == decision.name)
                .expect("planned from this list");
            doomed.push((
                env.clone(),
                record.name.clone(),
                record.manifest.clone(),
                record.expires,
            ));
        }
        plans.insert(env, plan);
    }
    let pruned: Vec<String> = doomed
        .iter()
        .map(|(env, name, ..)| format!("{env}/{name}"))
        .collect();
    if dry_run {
        return Ok(PruneOutcome {
            dry_run,
            plans,
            pruned,
            store: None,
        });
    }
    let mut manifests = Vec::new();
    for (env, name, manifest, expires) in &doomed {
        if let Some(id) = manifest {
            match daemon.repo.load_manifest(env, id).await {
                Ok(manifest) => manifests.push(manifest),
                Err(e) => {
                    tracing::warn!(env = %env, backup = %name, error = %e, "manifest of an expired backup unreadable; removing the entry")
                }
            }
        }
        let detail = expires.map(|e| format!("expired at {}", e.to_rfc3339()));
        let entry = ActivityEntry::now(user, Some(env), "prune", Some(name), "succeeded", detail);
        let (env, name) = (env.clone(), name.clone());
        daemon
            .catalog
            .blocking(move |c| {
                c.remove_backup(&env, &name)?;
                c.add_activity(&entry)
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    let report = daemon
        .repo
        .prune(&manifests)
        .await
        .map_err(|e| e.to_string())?;
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
    })
}

/// Prunes once now (after a start-up) and then every day, until shutdown.
pub async fn daily(daemon: Arc<Daemon>) {
    loop {
        if let Err(e) = prune(&daemon, "root", false).await {
            tracing::error!(error = %e, "daily prune failed");
        }
        tokio::select! {
            () = tokio::time::sleep(DAILY) => {}
            () = daemon.shutdown.cancelled() => return,
        }
    }
}
