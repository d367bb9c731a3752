//! The daemon's wiring and lifecycle.
//!
//! Start-up: config → catalog (migrated) → store and repository (format and key
//! checked; created on first start) → jobs a crash left running are failed → job
//! runner and socket server start → `READY=1` to systemd. SIGHUP (or `envsnapctl
//! reload`) re-reads the config; an invalid one is refused, logged, and the old one
//! kept. SIGTERM (or SIGINT) stops taking jobs, cancels running backups at a safe
//! point, waits for them, and returns.
//!
//! Settings that shape what is already open (`daemon.host`, `daemon.state_dir`,
//! `daemon.socket`, `[store]`) take effect at the next start; a reload that changes
//! them says so in the log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use futures::StreamExt;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, CatalogError};
use crate::config::{Config, ConfigError};
use crate::jobs::{self, Runner};
use crate::repo::crypto::{KeyError, Keys};
use crate::repo::{InitOptions, RepoError, Repository};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("store {url}: {source}")]
    Repo { url: String, source: RepoError },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("control socket {path}: {problem}")]
    Socket { path: String, problem: String },
    #[error("metrics listener {address} (daemon.metrics_listen): {source}")]
    Metrics {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Everything the server, the runner and the jobs share.
pub struct Daemon {
    config: RwLock<Arc<Config>>,
    pub catalog: Catalog,
    pub repo: Repository,
    /// The whole store (every host's prefix), for reading other hosts' backups.
    store_root: Store,
    keys: Keys,
    pub runner: Runner,
    /// Fired on SIGTERM: stop taking jobs, cancel running ones.
    pub shutdown: CancellationToken,
    /// Wakes the scheduler when the config (and so the schedules) changed.
    pub schedule_changed: tokio::sync::Notify,
    /// Wakes the sweeper of expired link exports when a new one was made.
    pub exports_changed: tokio::sync::Notify,
    started: Instant,
}

impl Daemon {
    /// Opens the catalog and the repository and recovers from an interrupted run.
    pub async fn open(config: Config) -> Result<Arc<Self>, DaemonError> {
        let state_dir = &config.daemon.state_dir;
        create_private_dir(state_dir)?;
        // Scratch of a run that was killed (import staging, credential files).
        let _ = std::fs::remove_dir_all(state_dir.join("tmp"));
        let catalog = Catalog::open(&state_dir.join("catalog.sqlite"))?;
        let keys = match &config.store.key_file {
            Some(path) => Keys::from_key_file(path)?,
            None => Keys::none(),
        };
        let url = config.store.url.clone();
        let repo_error = |source| DaemonError::Repo {
            url: url.clone(),
            source,
        };
        let root = Store::from_url(&url).map_err(|e| repo_error(e.into()))?;
        let options = InitOptions {
            compression: config.store.compression,
            ..InitOptions::default()
        };
        let repo = Repository::open_or_init(
            &root,
            &config.daemon.host,
            keys.clone(),
            catalog.clone(),
            options,
        )
        .await
        .map_err(repo_error)?;
        if catalog.chunk_count()? == 0 {
            // A new catalog beside an existing store: index what is already there.
            repo.rebuild_index().await.map_err(repo_error)?;
        }
        for job in catalog.recover_interrupted()? {
            tracing::warn!(job = job.id, kind = %job.kind, env = job.env.as_deref().unwrap_or(""), "job interrupted by a restart marked failed");
        }
        Ok(Arc::new(Daemon {
            config: RwLock::new(Arc::new(config)),
            catalog,
            repo,
            store_root: root,
            keys,
            runner: Runner::default(),
            shutdown: CancellationToken::new(),
            schedule_changed: tokio::sync::Notify::new(),
            exports_changed: tokio::sync::Notify::new(),
            started: Instant::now(),
        }))
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The repository holding `host`'s backups: ours, or another host's in the same
    /// store, opened read-only with a private index built from its objects.
    pub async fn source_repo(&self, host: Option<&str>) -> Result<Repository, RepoError> {
        match host {
            None => Ok(self.repo.clone()),
            Some(host) if host == self.repo.host() => Ok(self.repo.clone()),
            Some(host) => {
                let catalog = Catalog::in_memory()?;
                let repo =
                    Repository::open(&self.store_root, host, self.keys.clone(), catalog).await?;
                repo.rebuild_index().await?;
                Ok(repo)
            }
        }
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Re-reads the config file; on error the running config stays.
    pub fn reload(&self) -> Result<Arc<Config>, ConfigError> {
        let current = self.config();
        if !current.path.is_file() {
            return Ok(current); // the embedded default has no file to re-read
        }
        let fresh = Config::load(&current.path)?;
        let fixed = |c: &Config| {
            (
                c.daemon.host.clone(),
                c.daemon.state_dir.clone(),
                c.daemon.socket.clone(),
                c.daemon.metrics_listen,
                c.store.url.clone(),
            )
        };
        if fixed(&fresh) != fixed(&current) {
            tracing::warn!(
                "daemon.host, daemon.state_dir, daemon.socket, daemon.metrics_listen and [store] changes take effect at the next start"
            );
        }
        let fresh = Arc::new(fresh);
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        self.runner.wake();
        self.schedule_changed.notify_one();
        Ok(fresh)
    }
}

fn create_private_dir(path: &Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| DaemonError::StateDir {
            path: path.display().to_string(),
            source,
        })
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

/// Runs the daemon until SIGTERM/SIGINT (or `daemon.shutdown` fires).
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: UnixListener,
    metrics: Option<tokio::net::TcpListener>,
) {
    let socket: PathBuf = daemon.config().daemon.socket.clone();
    let runner = tokio::spawn(jobs::run(daemon.clone()));
    let scheduler = tokio::spawn(crate::schedule::run(daemon.clone()));
    let pruner = tokio::spawn(crate::jobs::prune::daily(daemon.clone()));
    let sweeper = tokio::spawn(crate::link::sweep(daemon.clone()));
    let server = tokio::spawn(crate::control::server::run(listener, daemon.clone()));
    let metrics = metrics.map(|l| tokio::spawn(crate::metrics::serve(l, daemon.clone())));
    let signals = tokio::spawn(handle_signals(daemon.clone()));
    let watchdog = tokio::spawn(feed_watchdog());
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(socket = %socket.display(), host = daemon.repo.host(), "envsnapd ready");
    daemon.shutdown.cancelled().await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("shutting down: cancelling running jobs at a safe point");
    let _ = runner.await;
    daemon.runner.wait_idle().await;
    let _ = server.await;
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    let _ = scheduler.await;
    let _ = pruner.await;
    let _ = sweeper.await;
    signals.abort();
    watchdog.abort();
    let _ = std::fs::remove_file(&socket);
    tracing::info!("envsnapd stopped");
}

async fn handle_signals(daemon: Arc<Daemon>) {
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
            match daemon.reload() {
                Ok(config) => tracing::info!(
                    environments = config.environments.len(),
                    "configuration reloaded"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "configuration NOT reloaded; the previous one stays in force")
                }
            }
        } else {
            daemon.shutdown.cancel();
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
