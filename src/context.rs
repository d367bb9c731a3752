//! The context: the state that request handlers and jobs share.
//!
//! A [`Context`] holds the config in force, the catalog, the repository (and the
//! whole store, for other hosts' backups), the runner's state, the clock, and the
//! signals between parts of the daemon (shutdown, "the schedules changed", "a link
//! export was made"). It depends only on those lower layers (config, catalog, repo,
//! store, the runner's state), never on the handlers, jobs, loops or servers that use
//! it, so it can be built in a test on a temporary directory with a manual clock, with
//! no socket and no daemon around it.
//!
//! Opening is the daemon's start-up order below the servers: state directory →
//! catalog (migrated) → store and repository (format and key checked; created on
//! first start; the chunk index rebuilt beside an empty catalog) → jobs a crash left
//! running failed. What fails names what it was opening; nothing is left half made.
//!
//! Loops and servers do not take the context: each takes the narrow handles it uses
//! (a clone of the catalog, the live config, one `Notify`), which the daemon's wiring
//! hands out.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, CatalogError};
use crate::clock::Clock;
use crate::config::{Config, ConfigError, LiveConfig, OnInterrupt};
use crate::jobs::runner::Runner;
use crate::repo::crypto::{KeyError, Keys};
use crate::repo::{InitOptions, RepoError, Repository};
use crate::store::Store;

/// Why the context could not be opened (the daemon cannot start).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
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
}

/// Everything the handlers and the jobs share; built once, held in an `Arc`.
pub struct Context {
    pub config: LiveConfig,
    pub catalog: Catalog,
    pub repo: Repository,
    /// The whole store (every host's prefix), for reading other hosts' backups.
    store_root: Store,
    keys: Keys,
    pub runner: Arc<Runner>,
    pub clock: Clock,
    /// Fired on SIGTERM: stop taking jobs, cancel running ones.
    pub shutdown: CancellationToken,
    /// Wakes the scheduler when the config (and so the schedules) changed.
    pub schedule_changed: Arc<Notify>,
    /// Wakes the sweeper of expired link exports when a new one was made.
    pub exports_changed: Arc<Notify>,
    /// The fleet as last watched (`fleet.watch`), for the metrics.
    pub fleet: crate::fleet::view::Snapshot,
    started: Instant,
}

impl Context {
    /// Opens the catalog and the repository and recovers from an interrupted run.
    pub async fn open(config: Config, clock: Clock) -> Result<Arc<Self>, OpenError> {
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
        let repo_error = |source| OpenError::Repo {
            url: url.clone(),
            source,
        };
        let mut root = Store::from_url(&url).map_err(|e| repo_error(e.into()))?;
        root.configure(&config.store.transfer);
        if let Some(policy) = config.store.lock {
            root = root
                .with_lock(&url, policy)
                .map_err(|e| repo_error(e.into()))?;
            // Before anything is written: a bucket without Object Lock is refused.
            root.check_lock().await.map_err(|e| repo_error(e.into()))?;
            restore_hidden_repository(&root, &config.daemon.host, clock.now())
                .await
                .map_err(repo_error)?;
        }
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
        .inspect_err(|e| {
            if matches!(e, RepoError::RepositoryLost { .. }) {
                // Opening a local store made its directory again: take it back
                // (only if still empty), so nothing is left at an unmounted path.
                if let Some(dir) = url::Url::parse(&url)
                    .ok()
                    .and_then(|u| u.to_file_path().ok())
                {
                    let _ = std::fs::remove_dir(dir);
                }
            }
        })
        .map_err(repo_error)?;
        repo.adopt_unlocked_data().await.map_err(repo_error)?;
        if catalog.chunk_count()? == 0 {
            // A new catalog beside an existing store: index what is already there.
            repo.rebuild_index().await.map_err(repo_error)?;
        }
        let rollback = config.restore.on_interrupt == OnInterrupt::Rollback;
        for job in catalog.recover_interrupted(rollback)? {
            tracing::warn!(job = job.id, kind = %job.kind, env = job.env.as_deref().unwrap_or(""), "job interrupted by a restart marked failed");
        }
        Ok(Arc::new(Context {
            config: LiveConfig::new(config),
            catalog,
            repo,
            store_root: root,
            keys,
            runner: Arc::new(Runner::default()),
            clock,
            shutdown: CancellationToken::new(),
            schedule_changed: Arc::new(Notify::new()),
            exports_changed: Arc::new(Notify::new()),
            fleet: Default::default(),
            started: Instant::now(),
        }))
    }

    /// The whole store: every host's prefix.
    pub fn store_root(&self) -> &Store {
        &self.store_root
    }

    /// The store's key (none for a plain store).
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// `host`'s repository opened for reading its manifests (no chunk index).
    pub async fn host_repo(&self, host: &str) -> Result<Repository, RepoError> {
        let catalog = Catalog::in_memory()?;
        let root = self.host_root(host).await?;
        Repository::open(&root, host, self.keys.clone(), catalog).await
    }

    /// The store as it holds `host`'s objects for reading them. Another host's,
    /// with Object Lock: as envsnap wrote them (`Store::original_versions`), so a
    /// host whose credentials an intruder used to delete or overwrite its backups
    /// is read underneath; only backups whose lock lasts are listed.
    pub async fn host_root(&self, host: &str) -> Result<Store, RepoError> {
        if host == self.repo.host() || self.store_root.lock_policy().is_none() {
            return Ok(self.store_root.clone());
        }
        let dir = crate::repo::checked_name(host)?;
        Ok(self
            .store_root
            .original_versions(dir, &["manifests"], self.clock.now())
            .await?)
    }

    /// The config in force now.
    pub fn config(&self) -> Arc<Config> {
        self.config.get()
    }

    /// The repository holding `host`'s backups: ours, or another host's in the same
    /// store, opened read-only with a private index built from its objects.
    pub async fn source_repo(&self, host: Option<&str>) -> Result<Repository, RepoError> {
        match host {
            None => Ok(self.repo.clone()),
            Some(host) if host == self.repo.host() => Ok(self.repo.clone()),
            Some(host) => {
                let repo = self.host_repo(host).await?;
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
                "daemon.host, daemon.state_dir, daemon.socket, daemon.metrics_listen and store.url changes take effect at the next start"
            );
        }
        // Limits, retries and concurrency apply at once, to running jobs too.
        self.store_root.configure(&fresh.store.transfer);
        let fresh = Arc::new(fresh);
        self.config.replace(fresh.clone());
        self.runner.wake();
        self.schedule_changed.notify_one();
        Ok(fresh)
    }
}

/// Under Object Lock, a repository whose config is gone was deleted by someone
/// holding its credentials (envsnap never deletes it): its locked originals are
/// put back before it is opened, instead of refusing to start or starting anew.
async fn restore_hidden_repository(
    root: &Store,
    host: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), RepoError> {
    let dir = crate::repo::checked_name(host)?;
    match root.scoped(dir).size("config").await {
        Err(crate::store::StoreError::NotFound { .. }) => {}
        other => return other.map(|_| ()).map_err(RepoError::from),
    }
    let restored = root.restore_original_versions(dir, now).await?;
    if restored > 0 {
        tracing::warn!(
            host,
            restored,
            "this host's repository had been deleted or overwritten; its locked originals were restored"
        );
    }
    Ok(())
}

fn create_private_dir(path: &Path) -> Result<(), OpenError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| OpenError::StateDir {
            path: path.display().to_string(),
            source,
        })
}

/// Contexts for in-process tests of handlers and jobs: the demo environment on a
/// temporary directory (a local store, a SQLite catalog), with a manual clock.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use chrono::{DateTime, Utc};

    use super::Context;
    use crate::clock::{Clock, ManualClock};
    use crate::config::Config;

    pub struct TestContext {
        pub ctx: Arc<Context>,
        /// Moves the context's clock.
        pub hand: ManualClock,
        _dir: tempfile::TempDir,
    }

    /// The demo environment, changed by `adjust`, at time `start`.
    pub async fn demo(start: DateTime<Utc>, adjust: impl FnOnce(&mut Config)) -> TestContext {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = Config::embedded_default(dir.path());
        adjust(&mut config);
        crate::sources::demo::prepare(&config).expect("demo files");
        let (clock, hand) = Clock::manual(start);
        let ctx = Context::open(config, clock).await.expect("context opens");
        TestContext {
            ctx,
            hand,
            _dir: dir,
        }
    }

    /// A fixed time, from its RFC 3339 text.
    pub fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("a valid time")
            .with_timezone(&Utc)
    }
}
