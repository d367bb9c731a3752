//! The daemon's configuration: schema, defaults, `ENVSNAP_*` overrides, validation.
//!
//! A config is read in four steps, each failing with one line that names the file
//! (or the environment variable), the dotted key and the problem:
//!
//! 1. the TOML text is parsed (syntax errors carry the line number);
//! 2. `ENVSNAP_*` variables are mapped onto keys ([`overrides`]) and merged over the
//!    file with the `config` crate;
//! 3. the merged tree is deserialized strictly (unknown keys and wrong types are
//!    errors) into the raw shape ([`raw`]), with `serde_path_to_error` giving the key;
//! 4. every value is checked and defaults are filled in ([`validate`]), giving the
//!    types below, which hold only valid values: schedules are normalized 6-field cron,
//!    durations are `Duration`s, paths that must be absolute are.
//!
//! Nothing outside the config is touched while loading except `password_file`s, whose
//! existence and permissions are checked (a world-readable password file is refused).
//! Version files and commands are read later, by [`VersionSource::read`]. A failed
//! load changes nothing, so a reload with a broken file keeps the old config.
//!
//! `docs/config.md` documents every key for operators.

mod access;
mod live;
mod overrides;
mod raw;
mod validate;
mod validate_db;
mod values;
mod version;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use access::{AccessRules, Action, Principal};
pub use live::LiveConfig;
pub use values::{normalize_cron, parse_duration};
pub use version::VersionSource;

/// The path `Config::path` holds for [`Config::embedded_default`].
pub const EMBEDDED_DEFAULT: &str = "<embedded default>";

/// A whole, valid configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from, or `<embedded default>`.
    pub path: PathBuf,
    pub daemon: DaemonConfig,
    pub store: StoreConfig,
    /// The global rules; an environment's own `access` table replaces them for it.
    pub access: AccessRules,
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
    /// Prometheus listener, loopback only.
    pub metrics_listen: Option<SocketAddr>,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub url: String,
    /// Encryption at rest when set.
    pub key_file: Option<PathBuf>,
    /// zstd level.
    pub compression: i32,
}

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

/// Where a bad value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOrigin {
    File(PathBuf),
    /// An `ENVSNAP_*` variable.
    Variable(String),
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigOrigin::File(path) => write!(f, "{}", path.display()),
            ConfigOrigin::Variable(name) => write!(f, "environment variable {name}"),
        }
    }
}

/// Why a config was refused. `Display` is one line naming the file or variable, the
/// key and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {message}", file.display())]
    Read { file: PathBuf, message: String },
    #[error("{}:{line}: TOML syntax error: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        message: String,
    },
    /// A key with a bad value, an unknown key, a missing key.
    #[error("{origin}: {key}: {problem}")]
    Invalid {
        origin: ConfigOrigin,
        key: String,
        problem: String,
    },
    /// An `ENVSNAP_*` variable that maps onto no key or holds a badly typed value.
    #[error("environment variable {variable}: {problem}")]
    Variable { variable: String, problem: String },
}

impl Config {
    /// Reads `path` and applies the process's `ENVSNAP_*` overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut vars = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().filter(|n| n.starts_with("ENVSNAP_")) else {
                continue;
            };
            let value = value.into_string().map_err(|_| ConfigError::Variable {
                variable: name.to_owned(),
                problem: "the value is not valid UTF-8".to_owned(),
            })?;
            vars.push((name.to_owned(), value));
        }
        Config::load_with_vars(path, vars)
    }

    /// [`Config::load`] with the given variables in place of the process
    /// environment (name, value pairs; names not starting with `ENVSNAP_` are
    /// ignored).
    pub fn load_with_vars(
        path: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let overrides = overrides::overrides_from_vars(vars)?;
        validate::parse(&text, path, &overrides)
    }

    /// Parses `text` as if read from `origin`, without environment overrides.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        validate::parse(text, origin, &[])
    }

    /// The quick-start config: everything under `state_dir`, one `demo` environment
    /// (code in `demo/app`, a SQLite database `demo/data/app.db`), no schedules, no
    /// access rules (only root, or the user running an unprivileged daemon, may act).
    pub fn embedded_default(state_dir: &Path) -> Config {
        let demo = state_dir.join("demo");
        let database = DatabaseConfig {
            kind: DatabaseKind::Sqlite,
            path: Some(demo.join("data").join("app.db")),
            database: None,
            host: None,
            port: None,
            user: None,
            password_file: None,
            socket: None,
            rdb_path: None,
            stop: Vec::new(),
            start: Vec::new(),
        };
        let environment = EnvConfig {
            name: "demo".to_owned(),
            version: VersionSource::Literal("1.0".to_owned()),
            schedule: Vec::new(),
            retention: validate::DEFAULT_RETENTION,
            keep: crate::retention::KeepCounts::default(),
            code: Some(demo.join("app")),
            mounts: BTreeMap::new(),
            databases: BTreeMap::from([("app".to_owned(), database)]),
            app: AppConfig::default(),
            access: None,
            on_failure: Vec::new(),
            on_success: Vec::new(),
        };
        Config {
            path: PathBuf::from(EMBEDDED_DEFAULT),
            daemon: DaemonConfig {
                host: validate::hostname(),
                socket: state_dir.join("envsnapd.sock"),
                socket_group: None,
                state_dir: state_dir.to_path_buf(),
                timezone: chrono_tz::Tz::UTC,
                max_jobs: validate::DEFAULT_MAX_JOBS,
                catch_up: true,
                on_failure: Vec::new(),
                on_success: Vec::new(),
                command_timeout: validate::DEFAULT_COMMAND_TIMEOUT,
                metrics_listen: None,
            },
            store: StoreConfig {
                url: validate::default_store_url(state_dir),
                key_file: None,
                compression: validate::DEFAULT_COMPRESSION,
            },
            access: AccessRules::default(),
            environments: BTreeMap::from([("demo".to_owned(), environment)]),
        }
    }

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

/// Where the daemon keeps its state when the config does not say: `/var/lib/envsnap`
/// for root, else `$XDG_STATE_HOME/envsnap` or `$HOME/.local/state/envsnap` (so an
/// unprivileged quick start works), else a directory under the temp dir.
pub fn default_state_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from(validate::DEFAULT_STATE_DIR);
    }
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(state) = absolute("XDG_STATE_HOME") {
        return state.join("envsnap");
    }
    if let Some(home) = absolute("HOME") {
        return home.join(".local/state/envsnap");
    }
    std::env::temp_dir().join(format!("envsnap-{}", nix::unistd::geteuid()))
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

#[cfg(test)]
mod tests;
