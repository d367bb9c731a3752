//! SQLite in a drill: the part written into the sandbox as a file, then opened
//! read-only: `PRAGMA integrity_check` must say `ok`; every table's rows counted.

use std::path::{Path, PathBuf};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::super::error::{DatabaseError, SourceError};
use super::part::{DatabaseFigures, ScratchSpec};

const KIND: &str = "sqlite";
const MAGIC: &[u8] = b"SQLite format 3\0";

fn error(problem: impl Into<DatabaseError>) -> SourceError {
    SourceError::unnamed(KIND, problem)
}

pub(super) async fn load(
    spec: &ScratchSpec<'_>,
) -> Result<(PathBuf, DatabaseFigures), SourceError> {
    let file = spec.dir.join("database.sqlite");
    let mut out = tokio::fs::File::create(&file).await.map_err(|source| {
        error(DatabaseError::Io {
            path: file.clone(),
            source,
        })
    })?;
    spec.repo
        .read_stream(spec.manifest, spec.part, &mut out)
        .await?;
    tokio::io::AsyncWriteExt::flush(&mut out)
        .await
        .map_err(|source| {
            error(DatabaseError::Io {
                path: file.clone(),
                source,
            })
        })?;
    drop(out);
    let path = file.clone();
    let figures = tokio::task::spawn_blocking(move || measure(&path))
        .await
        .map_err(|e| error(DatabaseError::SnapshotTask(e)))??;
    Ok((file, figures))
}

/// Opens the restored file (hostile input, parsed in the daemon itself) read-only
/// and defensively: the schema's views and triggers may call no function with side
/// effects, and the schema cannot be made to corrupt the file.
fn open(path: &Path) -> Result<Connection, SourceError> {
    let fail = |source| {
        error(DatabaseError::Snapshot {
            path: path.to_path_buf(),
            source,
        })
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)
        .map_err(fail)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .map_err(fail)?;
    Ok(conn)
}

/// Interrupts a query running on a blocking thread when its future is dropped (a
/// check that timed out), so the thread does not spin on.
struct InterruptOnDrop(rusqlite::InterruptHandle);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        self.0.interrupt();
    }
}

fn measure(path: &Path) -> Result<DatabaseFigures, SourceError> {
    let mut head = [0u8; 16];
    let read =
        std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
    if read.is_err() || head != MAGIC {
        return Err(error(DatabaseError::Integrity(
            "not a SQLite database".into(),
        )));
    }
    let conn = open(path)?;
    let sql_error = |e: rusqlite::Error| error(DatabaseError::Integrity(e.to_string()));
    let verdict: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(sql_error)?;
    let verdict = verdict.join("; ");
    if verdict != "ok" {
        return Err(error(DatabaseError::Integrity(verdict)));
    }
    let names: Vec<String> = conn
        // Virtual tables run their module's code: not counted.
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(sql_error)?;
    let mut figures = DatabaseFigures {
        integrity: Some(verdict),
        ..Default::default()
    };
    for name in names {
        let sql = format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\""));
        let count: i64 = conn.query_row(&sql, [], |r| r.get(0)).map_err(sql_error)?;
        figures.tables.insert(name, count as u64);
    }
    Ok(figures)
}

/// The first column of the first row of `sql`, as text.
pub(super) async fn query(path: &Path, sql: &str) -> Result<String, SourceError> {
    let conn = open(path)?;
    let _interrupt = InterruptOnDrop(conn.get_interrupt_handle());
    let sql = sql.to_owned();
    tokio::task::spawn_blocking(move || {
        conn.query_row(&sql, [], |r| {
            Ok(match r.get_ref(0)? {
                rusqlite::types::ValueRef::Null => "NULL".to_owned(),
                rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                rusqlite::types::ValueRef::Real(f) => f.to_string(),
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                rusqlite::types::ValueRef::Blob(_) => "<blob>".to_owned(),
            })
        })
        .map_err(|e| error(DatabaseError::Query(e.to_string())))
    })
    .await
    .map_err(|e| error(DatabaseError::SnapshotTask(e)))?
}
