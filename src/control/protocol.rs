//! The control protocol: versioned JSON messages over a Unix stream socket.
//!
//! Framing: one JSON document per line (`\n`-terminated): a request at most
//! [`MAX_MESSAGE`] bytes, a reply line at most [`MAX_REPLY`]. The client sends one [`Request`]; the daemon answers with zero or more
//! [`Reply::Progress`] lines and exactly one final [`Reply::Result`] or
//! [`Reply::Error`], then closes the connection. A request that works on a client's
//! files ([`Request::files_needed`]) is first answered with one [`Reply::SendFile`]
//! per file, and the client passes each open file in turn. `docs/protocol.md` describes the
//! messages for people writing other clients.
//!
//! Error codes ([`ErrorCode`]) are stable: scripts match on them, not on messages.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::catalog::JobState;

/// The right each request needs (the config's vocabulary: `[access]`).
pub use crate::config::Action;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The largest request the daemon accepts, newline included.
pub const MAX_MESSAGE: usize = 1 << 20;
/// The most files one request may pass (an import of that many parts).
pub const MAX_FILES: usize = 64;
/// The largest reply line a client accepts: a listing of tens of thousands of
/// backups is a few MiB; anything far beyond that is a broken peer.
pub const MAX_REPLY: usize = 64 << 20;

/// What the client asks for, with the protocol version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    #[serde(flatten)]
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "command",
    content = "args",
    rename_all = "kebab-case",
    deny_unknown_fields
)]
pub enum Request {
    Status,
    Reload,
    EnvList,
    EnvShow {
        env: String,
    },
    BackupCreate {
        env: String,
        #[serde(default)]
        name: Option<String>,
        /// Follow the job: progress events, then the finished backup.
        #[serde(default)]
        wait: bool,
        /// Keep the backup until then instead of for the environment's retention.
        #[serde(default)]
        keep_until: Option<DateTime<Utc>>,
    },
    /// Changes a backup's expiry: `until` a time, or forever when absent.
    BackupKeep {
        env: String,
        backup: String,
        #[serde(default)]
        until: Option<DateTime<Utc>>,
    },
    BackupList {
        env: String,
    },
    BackupShow {
        env: String,
        backup: String,
    },
    BackupDelete {
        env: String,
        backup: String,
    },
    /// Writes one part of a backup, in a format that needs no envsnap, into a file
    /// the client opened and passes over the socket (see [`Reply::SendFile`]).
    BackupDownload {
        env: String,
        backup: String,
        part: String,
        /// `tar` or `tar.zst` for trees (default `tar`); `native` for databases.
        #[serde(default)]
        format: Option<String>,
    },
    /// Exports one part of a backup into the store and answers a signed URL to it
    /// that expires after `ttl_seconds` (default 300, at most 3600).
    BackupLink {
        env: String,
        backup: String,
        part: String,
        #[serde(default)]
        format: Option<String>,
        #[serde(default)]
        ttl_seconds: Option<u64>,
    },
    /// Stores archives made elsewhere as a backup with trigger `import`; the client
    /// passes one file per part, in order, each after a [`Reply::SendFile`].
    Import {
        env: String,
        /// The environment's parts the files are for, in the order they come.
        parts: Vec<String>,
        /// Parts the daemon fetches instead: part → `http(s)://` or store URL.
        #[serde(default)]
        urls: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        name: Option<String>,
        /// The version the backup records (default: the environment's current one).
        #[serde(default)]
        version: Option<String>,
        #[serde(default)]
        wait: bool,
        /// Keep the archives' setuid and setgid bits (root only; dropped otherwise).
        #[serde(default)]
        keep_setuid: bool,
    },
    /// Replaces an environment's parts with a backup's (see `jobs/restore.rs`).
    Restore {
        env: String,
        backup: String,
        /// The backup's environment (`ENV`) or host and environment (`HOST/ENV`);
        /// default: `env` itself.
        #[serde(default)]
        from: Option<String>,
        /// Explicit part mapping, backup part → target part.
        #[serde(default)]
        map: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        wait: bool,
        #[serde(default)]
        no_safety_backup: bool,
        /// Only show what would be replaced.
        #[serde(default)]
        dry_run: bool,
    },
    /// Restores a backup into a sandbox and checks every part (see `jobs/drill.rs`).
    Drill {
        env: String,
        /// Default: the newest completed backup.
        #[serde(default)]
        backup: Option<String>,
        #[serde(default)]
        wait: bool,
        /// Keep the sandbox afterwards.
        #[serde(default)]
        keep: bool,
    },
    DrillList {
        env: String,
    },
    DrillShow {
        id: i64,
    },
    /// Every host of the store (see `fleet/`).
    FleetList,
    FleetShow {
        host: String,
    },
    /// Retires a host; with `delete_backups`, deletes everything under its prefix.
    FleetForget {
        host: String,
        #[serde(default)]
        delete_backups: bool,
    },
    JobList,
    JobShow {
        id: i64,
    },
    JobWatch {
        id: i64,
    },
    JobCancel {
        id: i64,
    },
    Log {
        #[serde(default)]
        env: Option<String>,
        #[serde(default)]
        since: Option<DateTime<Utc>>,
        #[serde(default)]
        limit: Option<u32>,
    },
    Verify {
        env: String,
        #[serde(default)]
        backup: Option<String>,
        #[serde(default)]
        read_data: bool,
    },
    Prune {
        #[serde(default)]
        dry_run: bool,
    },
    CatalogRebuild,
}

impl Request {
    /// The access right a request needs (see `[access]` in the config).
    pub fn action(&self) -> Action {
        match self {
            Request::BackupCreate { .. }
            | Request::JobCancel { .. }
            | Request::Verify { .. }
            | Request::Drill { .. } => Action::Backup,
            // Changing an expiry can make prune delete a backup: as strong as delete.
            Request::BackupDelete { .. }
            | Request::BackupKeep { .. }
            | Request::Restore { .. }
            | Request::Import { .. }
            | Request::Prune { .. }
            | Request::CatalogRebuild
            | Request::FleetForget { .. }
            | Request::Reload => Action::Restore,
            Request::BackupDownload { .. } | Request::BackupLink { .. } => Action::Download,
            _ => Action::Read,
        }
    }

    /// The request's command as sent (`backup-create`).
    pub fn name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("command").and_then(|c| c.as_str()).map(str::to_owned))
            .unwrap_or_default()
    }

    /// How many files the client passes over the socket for this request.
    pub fn files_needed(&self) -> usize {
        match self {
            Request::BackupDownload { .. } => 1,
            Request::Import { parts, .. } => parts.len(),
            _ => 0,
        }
    }

    /// The environment a request concerns, when it concerns one.
    pub fn env(&self) -> Option<&str> {
        match self {
            Request::EnvShow { env }
            | Request::BackupCreate { env, .. }
            | Request::BackupList { env }
            | Request::BackupShow { env, .. }
            | Request::BackupDelete { env, .. }
            | Request::BackupDownload { env, .. }
            | Request::BackupLink { env, .. }
            | Request::BackupKeep { env, .. }
            | Request::Restore { env, .. }
            | Request::Import { env, .. }
            | Request::Verify { env, .. }
            | Request::Drill { env, .. }
            | Request::DrillList { env } => Some(env),
            Request::Log { env, .. } => env.as_deref(),
            _ => None,
        }
    }
}

/// One line from the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Reply {
    Progress(Progress),
    /// The daemon waits for the request's next file: the client sends one byte
    /// carrying the open file descriptor (SCM_RIGHTS), within the request timeout.
    #[serde(rename = "send-file")]
    SendFile,
    Result {
        data: serde_json::Value,
    },
    Error(ErrorReply),
}

/// A running job's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub job: i64,
    pub state: JobState,
    pub bytes_done: u64,
    pub parts_done: u32,
    pub parts_total: u32,
    /// The part being worked on.
    #[serde(default)]
    pub part: String,
    /// Bytes per second since the job started.
    pub rate: u64,
    /// The store bandwidth limit holding the job back now (bytes per second), if
    /// any: `store.upload_limit` for a backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorReply {
    /// The reply with `message` made one printable line (it may quote hostile input).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorReply {
            code,
            message: crate::message::one_line(&message.into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message is not valid JSON or not a known request.
    BadRequest,
    /// The client speaks another protocol version.
    UnsupportedVersion,
    /// The message exceeds [`MAX_MESSAGE`].
    TooLarge,
    /// The user may not perform this action.
    Forbidden,
    /// No such environment, backup or job.
    NotFound,
    /// A name is invalid.
    Invalid,
    /// Conflicts with existing state: a duplicate name, a busy environment.
    Conflict,
    /// The job ran and failed.
    Failed,
    /// The daemon is shutting down.
    ShuttingDown,
    /// Anything else; the message says what.
    Internal,
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let envelope = Envelope {
            v: PROTOCOL_VERSION,
            request: Request::BackupCreate {
                env: "live".into(),
                name: Some("before-upgrade".into()),
                wait: true,
                keep_until: None,
            },
        };
        let json = serde_json::to_string(&envelope).unwrap();
        assert_eq!(
            json,
            r#"{"v":1,"command":"backup-create","args":{"env":"live","name":"before-upgrade","wait":true,"keep_until":null}}"#
        );
        assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), envelope);
        let status: Envelope = serde_json::from_str(r#"{"v":1,"command":"status"}"#).unwrap();
        assert_eq!(status.request, Request::Status);
        assert!(serde_json::from_str::<Envelope>(r#"{"v":1,"command":"rm-rf"}"#).is_err());
        let error = Reply::Error(ErrorReply {
            code: ErrorCode::NotFound,
            message: "no environment x".into(),
        });
        assert_eq!(
            serde_json::to_string(&error).unwrap(),
            r#"{"type":"error","code":"not_found","message":"no environment x"}"#
        );
    }
}
