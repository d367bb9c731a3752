//! Part sources: how each kind of part is read for a backup.
//!
//! Trees (code and mounts) go straight to the engine's archiver. Databases are dumped
//! with their native consistent method and streamed into the repository as a stream
//! part whose `format` says what the stream is. This is the only place that talks to
//! database engines.

pub mod demo;
pub mod sqlite;

use std::path::Path;

use tokio_util::sync::CancellationToken;

use crate::config::{DatabaseConfig, DatabaseKind};
use crate::repo::RepoError;
use crate::repo::writer::BackupWriter;

/// Why a database could not be dumped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("database {name} ({kind}): {message}")]
    Dump {
        name: String,
        kind: &'static str,
        message: String,
    },
    #[error(transparent)]
    Repo(#[from] RepoError),
}

pub fn kind_name(kind: DatabaseKind) -> &'static str {
    match kind {
        DatabaseKind::Postgres => "postgres",
        DatabaseKind::Mariadb => "mariadb",
        DatabaseKind::Sqlite => "sqlite",
        DatabaseKind::Redis => "redis",
    }
}

/// Loads the stream part `part` of `manifest` into the database `db`.
pub async fn restore_database(
    repo: &crate::repo::Repository,
    manifest: &crate::repo::manifest::Manifest,
    part: &str,
    target_part: &str,
    db: &DatabaseConfig,
) -> Result<(), SourceError> {
    let name = target_part.trim_start_matches("database:").to_owned();
    let fail = |message: String| SourceError::Dump {
        name: name.clone(),
        kind: kind_name(db.kind),
        message,
    };
    let format = manifest
        .part(part)
        .map(|p| p.format.clone())
        .unwrap_or_default();
    if format != kind_name(db.kind) {
        return Err(fail(format!(
            "part {part} holds a {format:?} dump, which cannot be loaded into a {} database",
            kind_name(db.kind)
        )));
    }
    match db.kind {
        DatabaseKind::Sqlite => {
            let path = db
                .path
                .as_deref()
                .ok_or_else(|| fail("no path configured".into()))?;
            sqlite::restore(repo, manifest, part, path)
                .await
                .map_err(|e| match e {
                    SourceError::Dump { message, .. } => fail(message),
                    other => other,
                })
        }
        other => Err(fail(format!(
            "{} databases are not supported by this version of envsnap yet",
            kind_name(other)
        ))),
    }
}

/// Dumps one database into `writer` as the stream part `part`.
pub async fn backup_database(
    writer: &mut BackupWriter,
    part: &str,
    db: &DatabaseConfig,
    scratch: &Path,
    cancel: &CancellationToken,
) -> Result<(), SourceError> {
    let name = part.trim_start_matches("database:").to_owned();
    let fail = |message: String| SourceError::Dump {
        name: name.clone(),
        kind: kind_name(db.kind),
        message,
    };
    match db.kind {
        DatabaseKind::Sqlite => {
            let path = db
                .path
                .as_deref()
                .ok_or_else(|| fail("no path configured".into()))?;
            sqlite::backup(writer, part, path, scratch, cancel)
                .await
                .map_err(|e| match e {
                    SourceError::Dump { message, .. } => fail(message),
                    other => other,
                })
        }
        other => Err(fail(format!(
            "{} databases are not supported by this version of envsnap yet",
            kind_name(other)
        ))),
    }
}
