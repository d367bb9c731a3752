//! Part sources: how each kind of part is read for a backup.
//!
//! Trees (code and mounts) go straight to the engine's archiver. Databases are dumped
//! with their native consistent method and streamed into the repository as a stream
//! part whose `format` ([`format_for`]) says what the stream is. This is the only place
//! that talks to database engines.
//!
//! Server databases (PostgreSQL, MariaDB, Redis) are dumped by their own tools run as
//! child processes. What those modules share is in files of its own, below them:
//!
//! - `tool.rs` finds and runs the tools, and streams a stored part into one's stdin
//!   (`pg_restore`, `mariadb`); a failed tool is its exit status and last stderr line.
//! - `dump.rs` streams a tool's output into the repository, accepting the part only
//!   if the tool exited successfully.
//! - `secret.rs` hands passwords to the tools in 0600 files, never on argv.
//! - `replace.rs` swaps a database's file (SQLite, Redis) for a stored part, safely
//!   in a directory the app's user can write.
//! - `error.rs`: every failure is a [`SourceError`] naming the database and its kind.
//!
//! - `scratch/`: restore drills load a part into a private scratch copy of its
//!   engine inside the drill's sandbox and measure it there.
//!
//! This file only dispatches on the database's kind.

pub mod demo;
mod dump;
mod error;
pub mod mariadb;
pub mod pg_roles;
pub mod postgres;
pub mod redis;
mod replace;
pub mod scratch;
mod secret;
pub mod sqlite;
mod tool;

use std::path::Path;

use tokio_util::sync::CancellationToken;

use crate::config::{DatabaseConfig, DatabaseKind};
use crate::repo::writer::PartWriter;

pub use error::{DatabaseError, SourceError};
pub use pg_roles::UnsafeRolesScript;
pub use replace::{ReplaceError, remove_leftovers as remove_replace_leftovers};
pub use secret::SecretError;
pub use tool::ToolError;

pub fn kind_name(kind: DatabaseKind) -> &'static str {
    match kind {
        DatabaseKind::Postgres => "postgres",
        DatabaseKind::Mariadb => "mariadb",
        DatabaseKind::Sqlite => "sqlite",
        DatabaseKind::Redis => "redis",
    }
}

/// The stream format of a database part of `kind`: the manifest's `format` field.
pub fn format_for(kind: DatabaseKind) -> &'static str {
    match kind {
        DatabaseKind::Postgres => postgres::FORMAT,
        DatabaseKind::Mariadb => mariadb::FORMAT,
        DatabaseKind::Sqlite => sqlite::FORMAT,
        DatabaseKind::Redis => redis::FORMAT,
    }
}

/// The database kind whose dumps have `format` (the inverse of [`format_for`]).
pub fn kind_for_format(format: &str) -> Option<DatabaseKind> {
    [
        DatabaseKind::Postgres,
        DatabaseKind::Mariadb,
        DatabaseKind::Sqlite,
        DatabaseKind::Redis,
    ]
    .into_iter()
    .find(|kind| format_for(*kind) == format)
}

/// Loads the stream part `part` of `manifest` into the database `db` (the part
/// `target_part`); credential files go to `scratch`, commands get `timeout`.
pub async fn restore_database(
    repo: &crate::repo::Repository,
    manifest: &crate::repo::manifest::Manifest,
    part: &str,
    target_part: &str,
    db: &DatabaseConfig,
    scratch: &Path,
    timeout: std::time::Duration,
) -> Result<(), SourceError> {
    let name = target_part.trim_start_matches("database:");
    let kind = kind_name(db.kind);
    let format = manifest
        .part(part)
        .map(|p| p.format.clone())
        .unwrap_or_default();
    if format != format_for(db.kind) {
        return Err(SourceError::Dump {
            name: name.to_owned(),
            kind,
            problem: Box::new(DatabaseError::WrongFormat {
                part: part.to_owned(),
                format,
                kind,
            }),
        });
    }
    let restored = match db.kind {
        DatabaseKind::Sqlite => match db.path.as_deref() {
            Some(path) => sqlite::restore(repo, manifest, part, path).await,
            None => Err(SourceError::unnamed(
                kind,
                DatabaseError::NotConfigured("path"),
            )),
        },
        DatabaseKind::Postgres => postgres::restore(repo, manifest, part, db, scratch).await,
        DatabaseKind::Mariadb => mariadb::restore(repo, manifest, part, db, scratch).await,
        DatabaseKind::Redis => redis::restore(repo, manifest, part, db, timeout).await,
    };
    restored.map_err(|e| e.named(name, kind))
}

/// Dumps one database into `writer` as the stream part `part`.
pub async fn backup_database(
    writer: &PartWriter,
    part: &str,
    db: &DatabaseConfig,
    scratch: &Path,
    cancel: &CancellationToken,
) -> Result<(), SourceError> {
    let name = part.trim_start_matches("database:");
    let kind = kind_name(db.kind);
    let stored = match db.kind {
        DatabaseKind::Sqlite => match db.path.as_deref() {
            Some(path) => sqlite::backup(writer, part, path, scratch, cancel).await,
            None => Err(SourceError::unnamed(
                kind,
                DatabaseError::NotConfigured("path"),
            )),
        },
        DatabaseKind::Postgres => postgres::backup(writer, part, db, scratch).await,
        DatabaseKind::Mariadb => mariadb::backup(writer, part, db, scratch).await,
        DatabaseKind::Redis => redis::backup(writer, part, db).await,
    };
    stored.map_err(|e| e.named(name, kind))
}
