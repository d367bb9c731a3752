//! SQLite parts: a consistent copy through SQLite's online backup API.
//!
//! The copy is taken in one step (`step(-1)`): a stepwise backup restarts whenever
//! another connection writes, so under a steady writer it would never finish. The
//! one step holds a read transaction on the source for its duration, which is what
//! makes the copy consistent. The copy lands in the daemon's scratch directory (the
//! backup API needs a database to write to), is streamed into the repository as the
//! SQLite file itself (a download of the part is a database `sqlite3` opens), and is
//! deleted.
//!
//! The copy keeps the source's page numbers, and a day's writes change some pages
//! in place: the part is cut at page boundaries ([`BackupWriter::add_paged_stream`]),
//! so a backup stores again only the pages that changed. With content-defined chunks
//! of about 1 MiB, 2% of rows updated at random changed nearly every chunk; page by
//! page, 29% of the pages (`docs/engine.md`). A database of more than
//! [`MAX_CHUNKS`] pages is cut into runs of pages, to bound its chunk list.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use tokio_util::sync::CancellationToken;

use super::error::{DatabaseError, SourceError};
use super::replace::{ReplaceError, owner_of, replace_with_part};
use crate::repo::writer::PartWriter;

pub const FORMAT: &str = "sqlite";

const KIND: &str = "sqlite";

/// The most chunks a database is cut into (8 MiB of chunk list; 1 GiB in 4 KiB pages).
const MAX_CHUNKS: u64 = 1 << 18;
/// The largest chunk a database is cut into (the content-defined chunker's largest):
/// past 2 TiB, the list grows instead.
const MAX_CHUNK_BYTES: usize = 8 << 20;

/// The size of the chunks to cut the database file `copy` into: its page size from
/// its header (offset 16, big-endian; 1 means 65,536), doubled until the file has
/// fewer than [`MAX_CHUNKS`] of them or they reach [`MAX_CHUNK_BYTES`].
fn chunk_size(header: &[u8; 18], file_size: u64) -> usize {
    let page = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        size if size >= 512 && size.is_power_of_two() => usize::from(size),
        // Not a page size SQLite writes: any fixed size still dedups unchanged runs.
        _ => 4096,
    };
    let mut size = page;
    while file_size / size as u64 >= MAX_CHUNKS && size < MAX_CHUNK_BYTES {
        size *= 2;
    }
    size
}

fn error(problem: impl Into<DatabaseError>) -> SourceError {
    SourceError::unnamed(KIND, problem)
}

/// The scratch copy of a database, removed when dropped: also when the backup is
/// abandoned while the copy is being made (another part failed), since the copy's
/// blocking task then drops its result.
struct ScratchCopy(Option<PathBuf>);

impl ScratchCopy {
    fn path(&self) -> &Path {
        self.0
            .as_deref()
            .expect("removed only by remove, which takes it")
    }

    /// Removes the copy on a blocking thread (a 200 MB unlink takes tens of ms).
    async fn remove(mut self) {
        if let Some(path) = self.0.take() {
            let _ = tokio::fs::remove_file(path).await;
        }
    }
}

impl Drop for ScratchCopy {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Copies the database at `path` into a new file under `scratch`.
fn snapshot(path: &Path, scratch: &Path) -> Result<ScratchCopy, SourceError> {
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
        Ok(()) => Ok(ScratchCopy(Some(copy))),
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
    writer: &PartWriter,
    part: &str,
    path: &Path,
    scratch: &Path,
    cancel: &CancellationToken,
) -> Result<(), SourceError> {
    let mut phases = crate::repo::phases::PhaseTimer::start("backup.sqlite");
    let (path_owned, scratch_owned) = (path.to_path_buf(), scratch.to_path_buf());
    let copy = tokio::task::spawn_blocking(move || snapshot(&path_owned, &scratch_owned))
        .await
        .map_err(|e| error(DatabaseError::SnapshotTask(e)))??;
    phases.lap("snapshot");
    if cancel.is_cancelled() {
        copy.remove().await;
        return Err(crate::repo::RepoError::Cancelled.into());
    }
    let stored = match open_copy(copy.path()).await {
        Ok((file, size)) => writer
            .add_paged_stream(part, FORMAT, file, size)
            .await
            .map(|_| writer.amend(part, |record| record.file = owner_of(path)))
            .map_err(SourceError::from),
        // The copy's name is internal: the error names the database.
        Err(source) => Err(error(DatabaseError::Io {
            path: path.to_path_buf(),
            source,
        })),
    };
    phases.lap("store");
    copy.remove().await;
    phases.lap("remove the copy");
    stored
}

/// Opens the scratch copy at its start, with the size of the chunks to cut it into.
async fn open_copy(copy: &Path) -> std::io::Result<(tokio::fs::File, usize)> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(copy).await?;
    let file_size = file.metadata().await?.len();
    let mut header = [0u8; 18];
    file.read_exact(&mut header).await?;
    file.rewind().await?;
    Ok((file, chunk_size(&header, file_size)))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(page: u16) -> [u8; 18] {
        let mut header = [0u8; 18];
        header[..16].copy_from_slice(b"SQLite format 3\0");
        header[16..].copy_from_slice(&page.to_be_bytes());
        header
    }

    #[test]
    fn chunks_are_pages_until_there_are_too_many() {
        assert_eq!(chunk_size(&header(4096), 200 << 20), 4096);
        assert_eq!(chunk_size(&header(1), 200 << 20), 65_536);
        assert_eq!(chunk_size(&header(512), 0), 512);
        // 4 GiB in 4 KiB pages: runs of 8 pages keep the list under 2^18 chunks.
        assert_eq!(chunk_size(&header(4096), 4 << 30), 32_768);
        assert_eq!(chunk_size(&header(4096), (1 << 30) - 1), 4096);
        // Never past 8 MiB, whatever the size (a hostile or absurd one included).
        assert_eq!(chunk_size(&header(4096), 64 << 40), 8 << 20);
        assert_eq!(chunk_size(&header(4096), u64::MAX), 8 << 20);
        // A header SQLite never writes still gets a fixed, sane size.
        assert_eq!(chunk_size(&header(1000), 1 << 20), 4096);
        assert_eq!(chunk_size(&header(0), 1 << 20), 4096);
    }
}
