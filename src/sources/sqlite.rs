//! SQLite parts: a consistent copy through SQLite's online backup API.
//!
//! The copy is taken in one step (`step(-1)`): a stepwise backup restarts whenever
//! another connection writes, so under a steady writer it would never finish. The
//! one step holds a read transaction on the source for its duration, which is what
//! makes the copy consistent. The copy lands in the daemon's scratch directory (the
//! backup API needs a database to write to), is streamed into the repository as the
//! SQLite file itself (a download of the part is a database `sqlite3` opens), and is
//! deleted.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use tokio_util::sync::CancellationToken;

use super::error::{DatabaseError, SourceError};
use super::replace::{ReplaceError, replace_with_part};
use crate::repo::writer::BackupWriter;

pub const FORMAT: &str = "sqlite";

const KIND: &str = "sqlite";

fn error(problem: impl Into<DatabaseError>) -> SourceError {
    SourceError::unnamed(KIND, problem)
}

/// Copies the database at `path` into a new file under `scratch`.
fn snapshot(path: &Path, scratch: &Path) -> Result<PathBuf, SourceError> {
    if !path.is_file() {
        return Err(error(DatabaseError::NoDatabaseFile(path.to_path_buf())));
    }
    std::fs::create_dir_all(scratch).map_err(|source| {
        error(DatabaseError::Io {
            path: scratch.to_path_buf(),
            source,
        })
    })?;
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).expect("the operating system's random source failed");
    let copy = scratch.join(format!("sqlite-{}.db", hex::encode(random)));
    let result = (|| {
        let source = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        source.busy_timeout(std::time::Duration::from_secs(30))?;
        let mut target = Connection::open(&copy)?;
        // A scratch copy, read once and deleted: no journal, no fsync (the fsync of
        // a 200 MB copy was a good part of a daily backup's time).
        target.pragma_update_and_check(None, "journal_mode", "OFF", |_| Ok(()))?;
        target.pragma_update(None, "synchronous", "OFF")?;
        let backup = rusqlite::backup::Backup::new(&source, &mut target)?;
        backup.step(-1)?;
        Ok::<_, rusqlite::Error>(())
    })();
    match result {
        Ok(()) => Ok(copy),
        Err(e) => {
            let _ = std::fs::remove_file(&copy);
            Err(error(DatabaseError::Snapshot {
                path: path.to_path_buf(),
                source: e,
            }))
        }
    }
}

pub async fn backup(
    writer: &mut BackupWriter,
    part: &str,
    path: &Path,
    scratch: &Path,
    cancel: &CancellationToken,
) -> Result<(), SourceError> {
    let (path_owned, scratch_owned) = (path.to_path_buf(), scratch.to_path_buf());
    let copy = tokio::task::spawn_blocking(move || snapshot(&path_owned, &scratch_owned))
        .await
        .map_err(|e| error(DatabaseError::SnapshotTask(e)))??;
    if cancel.is_cancelled() {
        let _ = std::fs::remove_file(&copy);
        return Err(crate::repo::RepoError::Cancelled.into());
    }
    let stored = match tokio::fs::File::open(&copy).await {
        Ok(file) => writer
            .add_stream(part, FORMAT, file)
            .await
            .map(|_| ())
            .map_err(SourceError::from),
        Err(source) => Err(error(DatabaseError::Io {
            path: copy.clone(),
            source,
        })),
    };
    let _ = tokio::fs::remove_file(&copy).await;
    stored
}

/// Replaces the database at `path` with the stream part `part`, atomically: the dump
/// is written beside it, checked to be a SQLite database, given the old file's owner
/// and mode, and renamed over it. The old `-wal` and `-shm` files belong to the old
/// database and would corrupt the new one, so they are removed first (the app is
/// stopped during a restore).
pub async fn restore(
    repo: &crate::repo::Repository,
    manifest: &crate::repo::manifest::Manifest,
    part: &str,
    path: &Path,
) -> Result<(), SourceError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let remove_side_files = || {
        for suffix in ["-wal", "-shm", "-journal"] {
            let side = path.with_file_name(format!("{file_name}{suffix}"));
            match std::fs::remove_file(&side) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(ReplaceError::Io { path: side, source }),
            }
        }
        Ok(())
    };
    replace_with_part(
        repo,
        manifest,
        part,
        path,
        b"SQLite format 3\0",
        remove_side_files,
    )
    .await
    .map_err(error)
}
