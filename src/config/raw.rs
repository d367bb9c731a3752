//! The config file's shape, as serde sees it: every key optional where it has a
//! default, unknown keys refused (`deny_unknown_fields`). Values that need their own
//! parsing (durations, cron, principals, time zones, URLs) stay strings here and are
//! checked in `validate`, which knows how to name the key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::schema::DatabaseKind;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub access: RawAccess,
    #[serde(default)]
    pub restore: RawRestore,
    #[serde(default)]
    pub import: RawImport,
    #[serde(default)]
    pub fleet: RawFleet,
    #[serde(default)]
    pub environments: BTreeMap<String, RawEnv>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub host: Option<String>,
    pub socket: Option<PathBuf>,
    pub socket_group: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub timezone: Option<String>,
    pub max_jobs: Option<i64>,
    pub catch_up: Option<bool>,
    #[serde(default)]
    pub on_failure: Vec<String>,
    #[serde(default)]
    pub on_success: Vec<String>,
    pub command_timeout: Option<String>,
    pub stall_timeout: Option<String>,
    pub metrics_listen: Option<String>,
    pub drill_user: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub url: Option<String>,
    pub key_file: Option<PathBuf>,
    pub compression: Option<i64>,
    pub concurrency: Option<i64>,
    pub retry_timeout: Option<String>,
    pub upload_limit: Option<OneOrMany>,
    pub download_limit: Option<OneOrMany>,
    pub lock: Option<RawLock>,
}

/// `store.lock`: S3 Object Lock.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLock {
    pub mode: Option<String>,
    pub extra: Option<String>,
}

/// A string, or a list of them (`upload_limit = "20MiB/s"` or `[...]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRestore {
    pub on_interrupt: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    pub heartbeat: Option<String>,
    pub stale_after: Option<String>,
    pub watch: Option<bool>,
    #[serde(default)]
    pub on_stale: Vec<String>,
    #[serde(default)]
    pub on_recovered: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImport {
    pub max_size: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccess {
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub backup: Vec<String>,
    #[serde(default)]
    pub download: Vec<String>,
    #[serde(default)]
    pub restore: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnv {
    /// A string or a `{ file }` / `{ command }` table, checked in `validate`.
    pub version: Option<toml::Value>,
    #[serde(default)]
    pub schedule: Vec<String>,
    pub retention: Option<String>,
    #[serde(default)]
    pub keep_last: u32,
    #[serde(default)]
    pub keep_daily: u32,
    #[serde(default)]
    pub keep_weekly: u32,
    #[serde(default)]
    pub keep_monthly: u32,
    pub code: Option<PathBuf>,
    #[serde(default)]
    pub mounts: BTreeMap<String, RawMount>,
    #[serde(default)]
    pub databases: BTreeMap<String, RawDatabase>,
    #[serde(default)]
    pub app: RawApp,
    pub access: Option<RawAccess>,
    #[serde(default)]
    pub on_failure: Vec<String>,
    #[serde(default)]
    pub on_success: Vec<String>,
    #[serde(default)]
    pub drill: RawDrill,
}

/// `[environments.NAME.drill]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrill {
    #[serde(default)]
    pub schedule: Vec<String>,
    /// Database name → SQL queries that must return true.
    #[serde(default)]
    pub checks: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub commands: Vec<String>,
    pub timeout: Option<String>,
    pub load_timeout: Option<String>,
    pub keep_sandbox_on_failure: Option<bool>,
    pub shrink_warning: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMount {
    pub path: PathBuf,
    #[serde(default)]
    pub exclude: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabase {
    pub kind: DatabaseKind,
    pub path: Option<PathBuf>,
    pub database: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub rdb_path: Option<PathBuf>,
    #[serde(default)]
    pub stop: Vec<String>,
    #[serde(default)]
    pub start: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApp {
    #[serde(default)]
    pub stop: Vec<String>,
    #[serde(default)]
    pub start: Vec<String>,
    #[serde(default)]
    pub check: Vec<String>,
}
