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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: i64,
    pub kind: String,
    pub env: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
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
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

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

pub(crate) fn time_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(crate) fn parse_time(text: &str) -> Result<DateTime<Utc>, super::CatalogError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| super::CatalogError::Malformed(format!("time {text:?}: {e}")))
}
