//! What a config gets for the keys it leaves out, and the quick-start config that
//! `envsnapd` runs with when there is no config file at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::access::AccessRules;
use super::schema::{
    AppConfig, Config, DaemonConfig, DatabaseConfig, DatabaseKind, DrillConfig, EnvConfig,
    FleetConfig, ImportConfig, RestoreConfig, StoreConfig,
};
use super::version::VersionSource;

/// The path `Config::path` holds for [`Config::embedded_default`].
pub const EMBEDDED_DEFAULT: &str = "<embedded default>";
pub(super) const DEFAULT_STATE_DIR: &str = "/var/lib/envsnap";
pub(super) const DEFAULT_SOCKET: &str = "/run/envsnap/envsnapd.sock";
pub(super) const DEFAULT_MAX_JOBS: usize = 2;
/// zstd's level for a new repository: the repository's own default.
pub(super) const DEFAULT_COMPRESSION: i32 = crate::repo::format::DEFAULT_COMPRESSION;
pub(super) const DEFAULT_RETENTION: Duration = Duration::from_secs(14 * 86_400);
pub(super) const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);
pub(super) const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
pub(super) const DEFAULT_DRILL_TIMEOUT: Duration = Duration::from_secs(300);
pub(super) const DEFAULT_DRILL_LOAD_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
pub(super) const DEFAULT_SHRINK_WARNING: f64 = 0.5;

impl Config {
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
            retention: DEFAULT_RETENTION,
            keep: crate::retention::KeepCounts::default(),
            code: Some(demo.join("app")),
            mounts: BTreeMap::new(),
            databases: BTreeMap::from([("app".to_owned(), database)]),
            app: AppConfig::default(),
            access: None,
            on_failure: Vec::new(),
            on_success: Vec::new(),
            drill: DrillConfig::default(),
        };
        Config {
            path: PathBuf::from(EMBEDDED_DEFAULT),
            daemon: DaemonConfig {
                host: hostname(),
                socket: state_dir.join("envsnapd.sock"),
                socket_group: None,
                state_dir: state_dir.to_path_buf(),
                timezone: chrono_tz::Tz::UTC,
                max_jobs: DEFAULT_MAX_JOBS,
                catch_up: true,
                on_failure: Vec::new(),
                on_success: Vec::new(),
                command_timeout: DEFAULT_COMMAND_TIMEOUT,
                stall_timeout: DEFAULT_STALL_TIMEOUT,
                metrics_listen: None,
                drill_user: None,
            },
            store: StoreConfig {
                url: default_store_url(state_dir),
                key_file: None,
                compression: DEFAULT_COMPRESSION,
                transfer: default_transfer(chrono_tz::UTC),
                lock: None,
            },
            access: AccessRules::default(),
            restore: RestoreConfig::default(),
            import: ImportConfig::default(),
            fleet: FleetConfig::default(),
            environments: BTreeMap::from([("demo".to_owned(), environment)]),
        }
    }
}

impl Default for DrillConfig {
    /// No scheduled drills, no operator checks: `envsnapctl drill` still checks every
    /// part with its engine.
    fn default() -> Self {
        DrillConfig {
            schedule: Vec::new(),
            checks: BTreeMap::new(),
            commands: Vec::new(),
            timeout: DEFAULT_DRILL_TIMEOUT,
            load_timeout: DEFAULT_DRILL_LOAD_TIMEOUT,
            keep_sandbox_on_failure: false,
            shrink_warning: DEFAULT_SHRINK_WARNING,
        }
    }
}

/// Where the daemon keeps its state when the config does not say: `/var/lib/envsnap`
/// for root, else `$XDG_STATE_HOME/envsnap` or `$HOME/.local/state/envsnap` (so an
/// unprivileged quick start works), else a directory under the temp dir.
pub fn default_state_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from(DEFAULT_STATE_DIR);
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

/// `[store]` request settings when the file sets none.
pub(super) fn default_transfer(timezone: chrono_tz::Tz) -> crate::store::TransferSettings {
    crate::store::TransferSettings {
        concurrency: crate::store::DEFAULT_CONCURRENCY,
        retry_timeout: crate::store::DEFAULT_RETRY_TIMEOUT,
        upload_limit: Default::default(),
        download_limit: Default::default(),
        timezone,
    }
}

pub(super) fn default_store_url(state_dir: &Path) -> String {
    url::Url::from_file_path(state_dir.join("store"))
        .map(String::from)
        .unwrap_or_else(|()| format!("file://{}/store", state_dir.display()))
}

/// The machine's host name, the default `daemon.host`.
pub(super) fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the pointer and length describe `buffer`, which outlives the call.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if status != 0 {
        return "localhost".to_owned();
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}
