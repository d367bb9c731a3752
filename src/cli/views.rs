//! The daemon's result payloads, as `envsnapctl` reads them for human output.
//!
//! Backups, jobs and activity entries are the catalog's records (their JSON form is the
//! interface). The rest are decoded here with only the fields the human output shows;
//! fields the daemon adds later are ignored, so a newer daemon does not break an older
//! client's tables (`--json` passes everything through untouched).

use chrono::{DateTime, Utc};
use serde::Deserialize;

pub use crate::catalog::{ActivityEntry, BackupRecord, JobRecord};

/// `env list` rows and `env show`.
#[derive(Debug, Clone, Deserialize)]
pub struct EnvView {
    pub name: String,
    pub status: String,
    /// None when the version source (file, command) could not be read.
    pub version: Option<String>,
    pub last_error: Option<String>,
    pub last_backup: Option<String>,
    #[serde(default)]
    pub last_backup_at: Option<DateTime<Utc>>,
    pub next_run: Option<DateTime<Utc>>,
    #[serde(default)]
    pub parts: Vec<String>,
    /// The `pre-restore` backup of the last restore, to roll back to.
    #[serde(default)]
    pub safety_backup: Option<String>,
    /// The newest drill's outcome and when it finished.
    #[serde(default)]
    pub last_drill: Option<String>,
    #[serde(default)]
    pub last_drill_at: Option<DateTime<Utc>>,
}

/// `status`.
#[derive(Debug, Clone, Deserialize)]
pub struct StatusView {
    pub version: String,
    pub host: String,
    pub uptime_seconds: u64,
    pub store: StoreView,
    pub jobs: QueueView,
    pub environments: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StoreView {
    pub url: String,
    pub reachable: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct QueueView {
    pub queued: u64,
    pub running: u64,
}

/// `backup create --wait`: the finished job and the backup it made.
#[derive(Debug, Clone, Deserialize)]
pub struct CreatedBackup {
    pub job: JobRecord,
    pub backup: BackupRecord,
}

/// `backup delete`: the name deleted and the prune report of reclaiming its data.
#[derive(Debug, Clone, Deserialize)]
pub struct DeletedBackup {
    pub deleted: String,
    #[serde(default)]
    pub prune: serde_json::Value,
}

/// `reload`.
#[derive(Debug, Clone, Deserialize)]
pub struct Reloaded {
    pub environments: u64,
}

/// The problems list of a `verify` report (its counters are shown generically).
#[derive(Debug, Clone, Deserialize)]
pub struct VerifyProblems {
    #[serde(default)]
    pub problems: Vec<String>,
}

/// A backup's logical and stored bytes over all its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupTotals {
    pub size: u64,
    pub stored: u64,
}

impl BackupTotals {
    pub fn of(backup: &BackupRecord) -> Self {
        BackupTotals {
            size: backup.parts.iter().map(|part| part.size).sum(),
            stored: backup.parts.iter().map(|part| part.stored).sum(),
        }
    }
}
