//! This host's heartbeat, and watching the fleet (`fleet/`).
//!
//! - [`heartbeat`] writes the host's status object at start-up, after every job,
//!   every `fleet.heartbeat`, and once more at shutdown. A failed write is logged and
//!   tried again at the next beat: the heartbeat is evidence, never in a backup's way.
//! - [`watch`], with `fleet.watch`, reads the whole fleet every `fleet.heartbeat`,
//!   keeps it for the metrics, and runs `fleet.on_stale` once when a host (its
//!   heartbeat) or one of its environments turns stale and `fleet.on_recovered` when
//!   it no longer is. Alarms are recorded in the catalog before their hook runs, so a
//!   restart neither repeats nor forgets one; a retired or deleted host's alarms are
//!   cleared without a hook.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::{BackupRecord, Catalog, CatalogError};
use crate::config::Config;
use crate::context::Context;
use crate::fleet::status::{
    EnvStatus, HostStatus, LastBackup, LastDrill, LastFailure, STATUS_FORMAT,
};
use crate::fleet::view::{self, HostView, Rules};

/// How long the status waits for one environment's version command.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes the status now, then at every beat, after every job, and at shutdown.
pub async fn heartbeat(ctx: Arc<Context>) {
    let started = ctx.clock.now();
    let mut finished = ctx.runner.finished.subscribe();
    loop {
        write_status(&ctx, started).await;
        let every = ctx.config().fleet.heartbeat;
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = finished.recv() => {}
            () = ctx.shutdown.cancelled() => break,
        }
    }
    // The last word, once the running jobs have stopped: when the daemon stopped.
    ctx.runner.wait_idle().await;
    write_status(&ctx, started).await;
}

async fn write_status(ctx: &Context, started: chrono::DateTime<chrono::Utc>) {
    let written = match build_status(ctx, started).await {
        Ok(status) => {
            let json = serde_json::to_vec(&status).expect("plain data serializes");
            ctx.repo.put_status(json).await.map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = written {
        tracing::warn!(error = %e, "cannot write this host's status (heartbeat)");
    }
}

async fn build_status(
    ctx: &Context,
    started: chrono::DateTime<chrono::Utc>,
) -> Result<HostStatus, CatalogError> {
    let config = ctx.config();
    let now = ctx.clock.now();
    let mut environments = Vec::new();
    for env in config.environments.values() {
        environments.push(env_status(ctx, &config, &env.name, now).await?);
    }
    Ok(HostStatus {
        format: STATUS_FORMAT,
        host: config.daemon.host.clone(),
        written: now,
        started,
        envsnap: env!("CARGO_PKG_VERSION").to_owned(),
        heartbeat_seconds: config.fleet.heartbeat.as_secs().max(1),
        timezone: config.daemon.timezone.name().to_owned(),
        environments,
    })
}

async fn env_status(
    ctx: &Context,
    config: &Config,
    name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<EnvStatus, CatalogError> {
    let env = config.env(name).expect("a configured environment");
    let owned = name.to_owned();
    let (state, last, failed, drill, stats) = ctx
        .catalog
        .blocking(move |c| {
            Ok((
                c.env_state(&owned)?,
                c.last_backup(&owned)?,
                c.last_failed_job(&owned)?,
                c.last_drill(&owned)?,
                c.env_stats(std::slice::from_ref(&owned))?,
            ))
        })
        .await?;
    Ok(EnvStatus {
        name: name.to_owned(),
        status: state.status,
        version: env.version.read(VERSION_TIMEOUT).await.ok(),
        schedule: env.schedule.clone(),
        next_run: crate::schedule::next_of(&env.schedule, config.daemon.timezone, now),
        backups: stats.first().map_or(0, |s| s.backups),
        last_backup: last.as_ref().and_then(last_backup),
        last_failure: failed.and_then(|job| {
            Some(LastFailure {
                time: job.finished?,
                kind: job.kind.to_string(),
                error: job.error.unwrap_or_default(),
            })
        }),
        last_drill: drill.map(|d| LastDrill {
            backup: d.backup,
            time: d.finished,
            outcome: d.outcome,
        }),
        last_error: state.last_error,
    })
}

fn last_backup(backup: &BackupRecord) -> Option<LastBackup> {
    Some(LastBackup {
        name: backup.name.clone(),
        time: backup.completed?,
        size: backup.parts.iter().map(|p| p.size).sum(),
    })
}

/// With `fleet.watch`, reads the fleet every beat until shutdown (see the module's
/// documentation); without, keeps no view.
pub async fn watch(ctx: Arc<Context>) {
    loop {
        let config = ctx.config();
        match config.fleet.watch {
            true => watch_once(&ctx, &config).await,
            false => *ctx.fleet.write().expect("not poisoned") = None,
        }
        tokio::select! {
            () = tokio::time::sleep(config.fleet.heartbeat) => {}
            () = ctx.shutdown.cancelled() => return,
        }
    }
}

async fn watch_once(ctx: &Context, config: &Config) {
    let rules = Rules {
        now: ctx.clock.now(),
        stale_after: config.fleet.stale_after,
    };
    match view::read(ctx.store_root(), ctx.keys(), rules).await {
        Ok(hosts) => {
            if let Err(e) = sound_alarms(ctx, config, &hosts).await {
                tracing::error!(error = %e, "cannot record the fleet's alarms");
            }
            *ctx.fleet.write().expect("not poisoned") = Some(hosts);
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the fleet from the store"),
    }
}

/// What is stale now: (host, env or `""`) → why.
fn stale_now(hosts: &[HostView]) -> BTreeMap<(String, String), String> {
    let mut stale = BTreeMap::new();
    for host in hosts {
        if let Some(reason) = &host.stale_reason {
            stale.insert((host.host.clone(), String::new()), reason.clone());
        }
        for env in &host.environments {
            if let Some(reason) = &env.stale_reason {
                stale.insert((host.host.clone(), env.name.clone()), reason.clone());
            }
        }
    }
    stale
}

/// Raises the alarms that are new, clears those that ended, with their hooks.
async fn sound_alarms(
    ctx: &Context,
    config: &Config,
    hosts: &[HostView],
) -> Result<(), CatalogError> {
    let stale = stale_now(hosts);
    let raised: BTreeSet<(String, String)> = ctx
        .catalog
        .blocking(Catalog::fleet_alarms)
        .await?
        .into_iter()
        .collect();
    let watched: BTreeSet<&str> = hosts
        .iter()
        .filter(|h| !h.retired)
        .map(|h| h.host.as_str())
        .collect();
    for ((host, env), reason) in &stale {
        if raised.contains(&(host.clone(), env.clone())) {
            continue;
        }
        let (h, e, r) = (host.clone(), env.clone(), reason.clone());
        if ctx
            .catalog
            .blocking(move |c| c.raise_fleet_alarm(&h, &e, &r))
            .await?
        {
            tracing::warn!(host = %host, env = %env, reason = %reason, "fleet: stale");
            run_hooks(config, &config.fleet.on_stale, "stale", host, env, reason).await;
        }
    }
    for (host, env) in raised {
        if stale.contains_key(&(host.clone(), env.clone())) {
            continue;
        }
        let (h, e) = (host.clone(), env.clone());
        let cleared = ctx
            .catalog
            .blocking(move |c| c.clear_fleet_alarm(&h, &e))
            .await?;
        // A retired or vanished host stops alarming without a word.
        if cleared && watched.contains(host.as_str()) {
            tracing::info!(host = %host, env = %env, "fleet: recovered");
            run_hooks(
                config,
                &config.fleet.on_recovered,
                "recovered",
                &host,
                &env,
                "",
            )
            .await;
        }
    }
    Ok(())
}

async fn run_hooks(
    config: &Config,
    commands: &[String],
    event: &str,
    host: &str,
    env: &str,
    reason: &str,
) {
    let vars = BTreeMap::from([
        ("ENVSNAP_EVENT".to_owned(), event.to_owned()),
        ("ENVSNAP_HOST".to_owned(), host.to_owned()),
        ("ENVSNAP_ENV".to_owned(), env.to_owned()),
        ("ENVSNAP_ERROR".to_owned(), reason.to_owned()),
    ]);
    if let Err(e) = crate::commands::run_all(commands, &vars, config.daemon.command_timeout).await {
        tracing::error!(host = %host, env = %env, error = %e, "fleet.on_{event} hook failed");
    }
}
