//! A host's status object: what its heartbeat says (`docs/format.md`, "Host status").
//!
//! Written by the host itself, read by every other: to a reader it is hostile input
//! like any object of the store. Unknown fields are ignored (a newer envsnap may add
//! some); the object is capped in size by the engine (`repo/status.rs`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The status format this envsnap writes and reads.
pub const STATUS_FORMAT: u32 = 1;

/// One host's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    pub format: u32,
    pub host: String,
    /// When this status was written.
    pub written: DateTime<Utc>,
    /// When the daemon that wrote it started.
    pub started: DateTime<Utc>,
    /// envsnap's version.
    pub envsnap: String,
    /// How often the host writes its status (`fleet.heartbeat`).
    pub heartbeat_seconds: u64,
    /// The zone its schedules are written in (`daemon.timezone`).
    pub timezone: String,
    #[serde(default)]
    pub environments: Vec<EnvStatus>,
}

/// One environment of a host, as it last reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvStatus {
    pub name: String,
    /// `ready`, `backing-up`, `updating`, `update-failed`.
    pub status: String,
    pub version: Option<String>,
    /// Normalized 6-field cron expressions.
    #[serde(default)]
    pub schedule: Vec<String>,
    pub next_run: Option<DateTime<Utc>>,
    /// Completed backups the host lists.
    #[serde(default)]
    pub backups: u64,
    pub last_backup: Option<LastBackup>,
    pub last_failure: Option<LastFailure>,
    pub last_drill: Option<LastDrill>,
    /// The environment's standing error (a failed restore).
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastBackup {
    pub name: String,
    pub time: DateTime<Utc>,
    /// Logical bytes of all its parts.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastFailure {
    pub time: DateTime<Utc>,
    /// The job's kind (`backup`, `restore`...).
    pub kind: String,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastDrill {
    pub backup: String,
    pub time: DateTime<Utc>,
    /// `passed` or `failed`.
    pub outcome: String,
}

impl HostStatus {
    /// Reads a status; `None` (with the reason) for one this envsnap cannot read.
    pub fn decode(json: &[u8]) -> Result<HostStatus, String> {
        let mut status: HostStatus = serde_json::from_slice(json).map_err(|e| {
            format!(
                "unreadable status: {}",
                crate::message::one_line(&e.to_string())
            )
        })?;
        if status.format != STATUS_FORMAT {
            return Err(format!("status format {} is not known", status.format));
        }
        if let Some(env) = status
            .environments
            .iter()
            .find(|e| !crate::repo::manifest::is_safe_name(&e.name))
        {
            return Err(format!(
                "its status names an environment {:?} that is not a valid name",
                crate::message::one_line(&env.name)
            ));
        }
        status.make_printable();
        Ok(status)
    }

    /// Every free-text field as one printable line: another host's words end up on
    /// an operator's terminal, and must not carry control characters there.
    fn make_printable(&mut self) {
        let clean = |text: &mut String| *text = crate::message::one_line(text);
        clean(&mut self.envsnap);
        clean(&mut self.timezone);
        for env in &mut self.environments {
            clean(&mut env.status);
            env.version.iter_mut().for_each(clean);
            env.last_error.iter_mut().for_each(clean);
            env.schedule.iter_mut().for_each(clean);
            if let Some(backup) = &mut env.last_backup {
                clean(&mut backup.name);
            }
            if let Some(failure) = &mut env.last_failure {
                clean(&mut failure.kind);
                clean(&mut failure.error);
            }
            if let Some(drill) = &mut env.last_drill {
                clean(&mut drill.backup);
                clean(&mut drill.outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_hosts_words_reach_the_terminal_as_one_printable_line() {
        let json = r#"{"format":1,"host":"web-02","written":"2026-12-03T10:00:00Z",
            "started":"2026-12-03T09:00:00Z","envsnap":"0.1\u001b[2J","heartbeat_seconds":300,
            "timezone":"UTC","environments":[{"name":"live","status":"ready\nFAKE: ok",
            "version":null,"next_run":null,"last_backup":null,"last_failure":null,
            "last_drill":null,"last_error":null}]}"#;
        let status = HostStatus::decode(json.as_bytes()).unwrap();
        assert!(!status.envsnap.contains('\u{1b}'), "{:?}", status.envsnap);
        assert!(!status.environments[0].status.contains('\n'));
        let bad = json.replace("\"live\"", "\"../x\"");
        assert!(
            HostStatus::decode(bad.as_bytes())
                .unwrap_err()
                .contains("not a valid name")
        );
    }
}
