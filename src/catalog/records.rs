//! The records the catalog keeps for the daemon, in the JSON form clients see
//! (field names are part of the interface: SPEC.md, "Interfaces that scripts rely on").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartSize {
    pub part: String,
    /// Logical bytes.
    pub size: u64,
    /// Bytes newly written to the store.
    pub stored: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub name: String,
    pub env: String,
    pub host: String,
    /// `creating` while its job runs, then `completed`.
    pub status: String,
    pub version: String,
    pub trigger: String,
    pub created: DateTime<Utc>,
    pub completed: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    pub user: String,
    pub parts: Vec<PartSize>,
    /// The manifest's id in the store (absent while creating).
    pub manifest: Option<String>,
}

/// What a job does. Stored and shown as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Backup,
    Import,
    Restore,
    /// A restore drill: a backup restored into a sandbox and checked.
    Drill,
}

/// Where a job is: `queued → running → succeeded | failed | cancelled`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    #[default]
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: i64,
    pub kind: JobKind,
    pub env: Option<String>,
    pub state: JobState,
    pub user: String,
    /// The backup the job makes or uses.
    pub backup: Option<String>,
    pub error: Option<String>,
    pub created: DateTime<Utc>,
    pub started: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
}

impl JobRecord {
    pub fn is_finished(&self) -> bool {
        self.state.is_finished()
    }
}

impl JobKind {
    pub const ALL: [JobKind; 4] = [
        JobKind::Backup,
        JobKind::Import,
        JobKind::Restore,
        JobKind::Drill,
    ];

    /// The name stored in the catalog and shown to people (`backup`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Import => "import",
            JobKind::Restore => "restore",
            JobKind::Drill => "drill",
        }
    }

    /// Whether the job writes a backup of its own (listed `creating` while it runs).
    pub fn makes_backup(self) -> bool {
        matches!(self, JobKind::Backup | JobKind::Import)
    }

    /// Whether the job changes the environment from a backup (one such job per
    /// environment at a time; prune leaves its backup alone).
    pub fn uses_backup(self) -> bool {
        matches!(self, JobKind::Restore | JobKind::Import)
    }
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// The lowercase names, as stored and shown.
macro_rules! text_enum {
    ($name:ident) => {
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, String> {
                $name::ALL
                    .into_iter()
                    .find(|v| v.as_str() == text)
                    .ok_or_else(|| format!("unknown {} {text:?}", stringify!($name)))
            }
        }

        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e: String| rusqlite::types::FromSqlError::Other(e.into()))
            }
        }
    };
}

text_enum!(JobKind);
text_enum!(JobState);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityEntry {
    pub time: DateTime<Utc>,
    pub user: String,
    pub env: Option<String>,
    pub action: String,
    pub backup: Option<String>,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl BackupRecord {
    /// The catalog's view of a backup found in the store (catalog rebuild).
    pub fn from_manifest(manifest: &crate::repo::manifest::Manifest) -> Self {
        BackupRecord {
            name: manifest.meta.name.clone(),
            env: manifest.meta.env.clone(),
            host: manifest.host.clone(),
            status: "completed".into(),
            version: manifest.meta.version.clone(),
            trigger: manifest.meta.trigger.clone(),
            created: manifest.created,
            completed: Some(manifest.completed),
            expires: manifest.meta.expires,
            user: manifest.meta.user.clone(),
            parts: manifest
                .parts
                .iter()
                .map(|p| PartSize {
                    part: p.part.clone(),
                    size: p.size,
                    stored: p.stored,
                })
                .collect(),
            manifest: Some(manifest.id.clone()),
        }
    }
}

impl ActivityEntry {
    /// An entry stamped now.
    pub fn now(
        user: &str,
        env: Option<&str>,
        action: &str,
        backup: Option<&str>,
        outcome: &str,
        detail: Option<String>,
    ) -> Self {
        ActivityEntry {
            time: Utc::now(),
            user: user.to_owned(),
            env: env.map(str::to_owned),
            action: action.to_owned(),
            backup: backup.map(str::to_owned),
            outcome: outcome.to_owned(),
            detail,
        }
    }
}

/// How many jobs wait and run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct JobCounts {
    pub queued: u64,
    pub running: u64,
}

/// What the catalog knows of an environment (the rest comes from the config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvState {
    pub name: String,
    /// `ready`, `backing-up`, `updating` or `update-failed`.
    pub status: String,
    pub last_error: Option<String>,
    /// The `pre-restore` backup of the last restore, to roll back to.
    pub safety_backup: Option<String>,
}

/// A restore drill as the catalog lists it; `report` is the whole report (JSON, the
/// same object the store keeps next to the backup's manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// The drill's job id on the host that ran it.
    pub id: i64,
    pub env: String,
    pub host: String,
    pub backup: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// `passed` or `failed`.
    pub outcome: String,
    pub error: Option<String>,
    pub warnings: u32,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub report: serde_json::Value,
}

pub(crate) fn time_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(crate) fn parse_time(text: &str) -> Result<DateTime<Utc>, super::error::CatalogError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| super::error::CatalogError::Malformed(format!("time {text:?}: {e}")))
}
