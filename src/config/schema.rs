//! The types of a valid config, as the rest of the daemon sees it: every value
//! checked, defaults filled in, schedules normalized, durations parsed. They are
//! built only by `validate` (from a file) and `defaults` (the embedded quick-start
//! config), so holding one means holding a config that passed every check.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::access::AccessRules;
use super::version::VersionSource;

/// A whole, valid configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from, or `<embedded default>`.
    pub path: PathBuf,
    pub daemon: DaemonConfig,
    pub store: StoreConfig,
    /// The global rules; an environment's own `access` table replaces them for it.
    pub access: AccessRules,
    pub restore: RestoreConfig,
    pub import: ImportConfig,
    pub fleet: FleetConfig,
    pub environments: BTreeMap<String, EnvConfig>,
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// This host's id in the store and in `--from HOST/ENV`; the hostname by default.
    pub host: String,
    pub socket: PathBuf,
    pub socket_group: Option<String>,
    /// Catalog and staging.
    pub state_dir: PathBuf,
    /// The zone schedules are written in.
    pub timezone: chrono_tz::Tz,
    /// Jobs of different environments that may run at once.
    pub max_jobs: usize,
    /// Run a schedule missed while the daemon was down once at start-up.
    pub catch_up: bool,
    /// Hook commands for every environment, in addition to the environment's own.
    pub on_failure: Vec<String>,
    pub on_success: Vec<String>,
    /// Limit for each hook, app, database stop/start and version command.
    pub command_timeout: Duration,
    /// How long a client may stop reading a download before the daemon gives up.
    pub stall_timeout: Duration,
    /// Prometheus listener, loopback only.
    pub metrics_listen: Option<SocketAddr>,
    /// The unprivileged user a drill's scratch PostgreSQL and Redis run as;
    /// `None`: `envsnap-drill` (the packages create it), else `nobody`.
    pub drill_user: Option<String>,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub url: String,
    /// Encryption at rest when set.
    pub key_file: Option<PathBuf>,
    /// zstd level.
    pub compression: i32,
    /// Requests in flight, retries and bandwidth limits.
    pub transfer: crate::store::TransferSettings,
    /// S3 Object Lock on everything written (`store.lock`).
    pub lock: Option<crate::store::LockPolicy>,
}

/// `[restore]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreConfig {
    pub on_interrupt: OnInterrupt,
}

/// What a restart does with an environment a killed restore left half replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnInterrupt {
    /// Restore the safety backup, start the app and run its check (the default).
    #[default]
    Rollback,
    /// Leave it `update-failed` for a person, naming the command that rolls back.
    Leave,
}

/// `[fleet]`: this host's heartbeat, and watching every host of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// How often the status object is written (also after every job).
    pub heartbeat: Duration,
    /// An environment whose newest backup, or a host whose heartbeat, is older than
    /// this is stale (besides two missed scheduled runs, or three missed heartbeats).
    pub stale_after: Option<Duration>,
    /// Export fleet metrics and run the hooks below for every host of the store.
    pub watch: bool,
    pub on_stale: Vec<String>,
    pub on_recovered: Vec<String>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            heartbeat: DEFAULT_HEARTBEAT,
            stale_after: None,
            watch: false,
            on_stale: Vec::new(),
            on_recovered: Vec::new(),
        }
    }
}

/// Five minutes: a host that stops is noticed within a quarter of an hour.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(300);

/// `[import]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportConfig {
    /// The most an archive may unpack to (the sum of its entries' sizes): a small
    /// compressed archive can claim terabytes.
    pub max_size: u64,
}

impl Default for ImportConfig {
    fn default() -> Self {
        ImportConfig {
            max_size: DEFAULT_IMPORT_MAX_SIZE,
        }
    }
}

/// 64 GiB: more than any environment this daemon is meant for, far less than a disk.
pub const DEFAULT_IMPORT_MAX_SIZE: u64 = 64 << 30;

/// `[environments.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvConfig {
    pub name: String,
    pub version: VersionSource,
    /// Normalized to 6-field cron, seconds first, in `daemon.timezone`.
    pub schedule: Vec<String>,
    pub retention: Duration,
    /// Count-based keeps on top of `retention` (`keep_last`, `keep_daily`, ...).
    pub keep: crate::retention::KeepCounts,
    pub code: Option<PathBuf>,
    pub mounts: BTreeMap<String, MountConfig>,
    pub databases: BTreeMap<String, DatabaseConfig>,
    pub app: AppConfig,
    /// Replaces the global `[access]` rules for this environment when present.
    pub access: Option<AccessRules>,
    pub on_failure: Vec<String>,
    pub on_success: Vec<String>,
    pub drill: DrillConfig,
}

/// `[environments.ENV.drill]`: restore drills of the environment's backups.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillConfig {
    /// Normalized cron, like `schedule`: when a drill of the newest backup runs.
    pub schedule: Vec<String>,
    /// Database name → SQL queries that must return true in the restored database.
    pub checks: BTreeMap<String, Vec<String>>,
    /// Run in the sandbox after the checks (`ENVSNAP_DRILL_DIR`, ...); must succeed.
    pub commands: Vec<String>,
    /// Limit for each check and each command.
    pub timeout: Duration,
    /// Limit for restoring and checking each part (a hostile dump may sleep).
    pub load_timeout: Duration,
    pub keep_sandbox_on_failure: bool,
    /// A table or part that shrank by more than this fraction since the last drill
    /// is a warning.
    pub shrink_warning: f64,
}

/// `[environments.ENV.mounts.NAME]`, the part `files:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountConfig {
    pub path: PathBuf,
    /// Glob patterns relative to `path` (`cache/**`).
    pub exclude: Vec<String>,
}

/// `[environments.ENV.databases.NAME]`, the part `database:NAME`. Which fields are
/// set depends on `kind`; validation guarantees the ones each kind needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub kind: DatabaseKind,
    /// SQLite: the database file.
    pub path: Option<PathBuf>,
    /// PostgreSQL, MariaDB: the database name.
    pub database: Option<String>,
    /// Host name, or (PostgreSQL) a socket directory.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    /// MariaDB, Redis: the server's Unix socket.
    pub socket: Option<PathBuf>,
    /// Redis: the dump file a restore replaces while Redis is stopped.
    pub rdb_path: Option<PathBuf>,
    pub stop: Vec<String>,
    pub start: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseKind {
    Postgres,
    #[serde(alias = "mysql")]
    Mariadb,
    Sqlite,
    Redis,
}

/// `[environments.ENV.app]`: commands around a restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppConfig {
    pub stop: Vec<String>,
    pub start: Vec<String>,
    pub check: Vec<String>,
}

/// One part of an environment, as the backup and restore jobs see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSpec {
    /// `code`, `files:NAME` or `database:NAME`.
    pub name: String,
    pub source: PartSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartSource {
    Tree { path: PathBuf, exclude: Vec<String> },
    Database(DatabaseConfig),
}

impl Config {
    pub fn env(&self, name: &str) -> Option<&EnvConfig> {
        self.environments.get(name)
    }

    /// The rules for `env`: its own `access` table when it has one, else the global
    /// rules (also for an unknown environment and for daemon-wide requests).
    pub fn access_for(&self, env: Option<&str>) -> &AccessRules {
        env.and_then(|name| self.environments.get(name))
            .and_then(|e| e.access.as_ref())
            .unwrap_or(&self.access)
    }
}

impl EnvConfig {
    /// The parts to back up: `code` first, then the mounts, then the databases, each
    /// group sorted by name.
    pub fn parts(&self) -> Vec<PartSpec> {
        let code = self.code.iter().map(|path| PartSpec {
            name: "code".to_owned(),
            source: PartSource::Tree {
                path: path.clone(),
                exclude: Vec::new(),
            },
        });
        let mounts = self.mounts.iter().map(|(name, mount)| PartSpec {
            name: format!("files:{name}"),
            source: PartSource::Tree {
                path: mount.path.clone(),
                exclude: mount.exclude.clone(),
            },
        });
        let databases = self.databases.iter().map(|(name, database)| PartSpec {
            name: format!("database:{name}"),
            source: PartSource::Database(database.clone()),
        });
        code.chain(mounts).chain(databases).collect()
    }
}

impl DatabaseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseKind::Postgres => "postgres",
            DatabaseKind::Mariadb => "mariadb",
            DatabaseKind::Sqlite => "sqlite",
            DatabaseKind::Redis => "redis",
        }
    }
}

impl fmt::Display for DatabaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
