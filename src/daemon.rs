//! The daemon's wiring and lifecycle: the top of the library, imported only by the
//! `envsnapd` binary.
//!
//! Start-up: config → the context ([`Context::open`]: catalog, store and repository,
//! jobs a crash left running failed; the sandboxes and scratch servers of drills it
//! interrupted removed) → control socket and metrics listener bound →
//! job runner, scheduler, daily prune, link sweeper, control server and metrics
//! started, each with the narrow handles it uses → `READY=1` to systemd. SIGHUP (or
//! `envsnapctl reload`) re-reads the config; an invalid one is refused, logged, and
//! the old one kept. SIGTERM (or SIGINT) stops taking jobs, cancels running backups
//! at a safe point, waits for them, and returns.
//!
//! Settings that shape what is already open (`daemon.host`, `daemon.state_dir`,
//! `daemon.socket`, `[store]`) take effect at the next start; a reload that changes
//! them says so in the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use tokio::net::UnixListener;

use crate::api::Api;
use crate::clock::Clock;
use crate::config::{Config, PartSource};
use crate::context::{Context, OpenError};
use crate::jobs::prune::Pruner;
use crate::jobs::scheduler::Scheduler;
use crate::link::Exports;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("control socket {path}: {problem}")]
    Socket { path: String, problem: String },
    #[error("metrics listener {address} (daemon.metrics_listen): {source}")]
    Metrics {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Opens the context on the system clock (see [`Context::open`]) and clears what
/// interrupted drills left.
pub async fn open(config: Config) -> Result<Arc<Context>, DaemonError> {
    let ctx = Context::open(config, Clock::system()).await?;
    // Drills a crash interrupted (their jobs were just failed): no scratch server
    // and no sandbox outlives them.
    let config = ctx.config();
    let drill_user = crate::sources::scratch::drill_user(config.daemon.drill_user.as_deref());
    let removed = crate::drill::sandbox::sweep(&config.daemon.state_dir, &drill_user);
    if removed > 0 {
        tracing::warn!(removed, "sandboxes of interrupted drills removed");
    }
    remove_restore_leftovers(&config);
    crate::jobs::recovery::queue_rollbacks(&ctx).await;
    Ok(ctx)
}

/// What an interrupted restore left inside the environments: staging directories
/// at the top of each tree part, staged database files beside SQLite databases and
/// Redis dump files.
fn remove_restore_leftovers(config: &Config) {
    for env in config.environments.values() {
        for part in env.parts() {
            match &part.source {
                PartSource::Tree { path, .. } => crate::repo::restorer::remove_stale_stages(path),
                PartSource::Database(db) => {
                    for file in [&db.path, &db.rdb_path].into_iter().flatten() {
                        crate::sources::remove_replace_leftovers(file);
                    }
                }
            }
        }
    }
}

/// Binds the control socket: mode 0660, group `socket_group`. A socket file left by a
/// dead daemon is replaced; a live daemon on it is an error.
pub async fn bind_socket(path: &Path, group: Option<&str>) -> Result<UnixListener, DaemonError> {
    let fail = |problem: String| DaemonError::Socket {
        path: path.display().to_string(),
        problem,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(fail("another envsnapd is already serving on it".into()));
        }
        std::fs::remove_file(path)
            .map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| fail(e.to_string()))?;
    if let Some(group) = group {
        let gid = nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .ok_or_else(|| {
                fail(format!(
                    "group {group:?} (daemon.socket_group) does not exist"
                ))
            })?
            .gid;
        nix::unistd::chown(path, None, Some(gid))
            .map_err(|e| fail(format!("cannot give it group {group}: {e}")))?;
    }
    Ok(listener)
}

/// The metrics listener, bound before the daemon reports itself ready.
pub async fn bind_metrics(
    address: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, DaemonError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| DaemonError::Metrics { address, source })
}

/// Runs the daemon until SIGTERM/SIGINT (or `ctx.shutdown` fires).
pub async fn serve(
    ctx: Arc<Context>,
    listener: UnixListener,
    metrics: Option<tokio::net::TcpListener>,
) {
    let socket: PathBuf = ctx.config().daemon.socket.clone();
    let shutdown = ctx.shutdown.clone();
    let metrics_sources = crate::metrics::Sources {
        config: ctx.config.clone(),
        catalog: ctx.catalog.clone(),
        fleet: ctx.fleet.clone(),
    };
    let runner = tokio::spawn(crate::jobs::run(ctx.clone()));
    let scheduler = tokio::spawn(crate::jobs::scheduler::run(
        Scheduler::of(&ctx),
        shutdown.clone(),
    ));
    let pruner = tokio::spawn(crate::jobs::prune::daily(
        Pruner::of(&ctx),
        shutdown.clone(),
    ));
    let sweeper = tokio::spawn(crate::link::sweep(Exports::of(&ctx), shutdown.clone()));
    let heartbeat = tokio::spawn(crate::jobs::fleet::heartbeat(ctx.clone()));
    let watcher = tokio::spawn(crate::jobs::fleet::watch(ctx.clone()));
    let api = Arc::new(Api::new(ctx.clone()));
    let server = tokio::spawn(crate::control::server::run(listener, api, shutdown.clone()));
    let metrics =
        metrics.map(|l| tokio::spawn(crate::metrics::serve(l, metrics_sources, shutdown.clone())));
    let signals = tokio::spawn(handle_signals(ctx.clone()));
    let watchdog = tokio::spawn(feed_watchdog());
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(socket = %socket.display(), host = ctx.repo.host(), "envsnapd ready");
    shutdown.cancelled().await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("shutting down: cancelling running jobs at a safe point");
    ctx.store_root().stop_retrying();
    let _ = runner.await;
    ctx.runner.wait_idle().await;
    let _ = server.await;
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    let _ = scheduler.await;
    let _ = pruner.await;
    let _ = sweeper.await;
    let _ = heartbeat.await;
    let _ = watcher.await;
    signals.abort();
    watchdog.abort();
    let _ = std::fs::remove_file(&socket);
    tracing::info!("envsnapd stopped");
}

async fn handle_signals(ctx: Arc<Context>) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = match signal_hook_tokio::Signals::new([SIGHUP, SIGTERM, SIGINT]) {
        Ok(signals) => signals,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return;
        }
    };
    while let Some(signal) = signals.next().await {
        if signal == SIGHUP {
            match ctx.reload() {
                Ok(config) => tracing::info!(
                    environments = config.environments.len(),
                    "configuration reloaded"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "configuration NOT reloaded; the previous one stays in force")
                }
            }
        } else {
            ctx.shutdown.cancel();
        }
    }
}

async fn feed_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = interval / 2;
    loop {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        tokio::time::sleep(period).await;
    }
}
