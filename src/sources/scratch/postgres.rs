//! PostgreSQL in a drill: a scratch cluster of the dump's major version.
//!
//! The dump's header (custom format) names the server version it came from.
//! `initdb` and `postgres` of that major version (or the nearest newer one
//! installed: `pg_restore` loads older dumps into newer servers) run as the drill's
//! unprivileged user, which owns only the cluster's own directory and reaches it
//! through descriptor 3; the server listens on a Unix socket in that directory and on
//! no TCP port, with durability off (the data is thrown away). The roles companion is
//! applied first, then `pg_restore --exit-on-error` loads the database (named after
//! the part, not after the header: see [`load`]), then every table's rows are
//! counted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use super::super::error::{DatabaseError, SourceError};
use super::super::postgres::{
    Connection, create_missing_roles, ident, installed_versions, literal, tool,
};
use super::super::tool::{feed_tool, find_tool};
use super::part::{DatabaseFigures, ScratchSpec, parse_counts};
use super::server::{DATA_PATH, Launch, OwnDir, Server, own_dir, prepare, run_setup, wait_ready};
use crate::config::{DatabaseConfig, DatabaseKind};

const KIND: &str = "postgres";
/// The scratch cluster's superuser (trust authentication on its private socket).
pub(super) const SUPERUSER: &str = "postgres";

fn error(problem: impl Into<DatabaseError>) -> SourceError {
    SourceError::unnamed(KIND, problem)
}

/// A running scratch cluster with the database loaded.
pub(super) struct Cluster {
    server: Server,
    /// The data directory, which holds the socket.
    data: OwnDir,
    database: String,
    connection: DatabaseConfig,
}

/// What a custom-format dump's header says that a drill uses.
#[derive(Debug, PartialEq, Eq)]
pub struct DumpHeader {
    pub server_major: u32,
}

pub(super) async fn load(
    spec: &ScratchSpec<'_>,
    name: &str,
) -> Result<(Cluster, DatabaseFigures), SourceError> {
    let header = read_header(spec).await?;
    let bin = server_bin(header.server_major)?;
    let data = own_dir(&spec.dir.join("pgdata"), spec.run_as).map_err(error)?;
    let launch = |tool, log| Launch {
        tool,
        user: Some(data.user),
        data_fd: Some(&data.fd),
        log,
    };
    let initdb_log = spec.dir.join("initdb.log");
    initdb(&bin, &launch("initdb", &initdb_log), spec.timeout).await?;
    let log = spec.dir.join("postgres.log");
    let mut command = Command::new(bin.join("postgres"));
    command.args(["-D", DATA_PATH]);
    for setting in [
        "listen_addresses=",
        "unix_socket_directories=/proc/self/fd/3",
        "unix_socket_permissions=0700",
        "fsync=off",
        "full_page_writes=off",
        "synchronous_commit=off",
        "logging_collector=off",
    ] {
        command.arg("-c").arg(setting);
    }
    prepare(&mut command, &launch("postgres", &log)).map_err(error)?;
    let server = Server::start(&mut command, "postgres", spec.dir).map_err(error)?;
    // Named after the part, never after the dump's header: a name from a hostile
    // header (`host=... dbname=...`) would be a connection string to libpq.
    let database = match crate::repo::manifest::is_safe_name(name) {
        true => name.to_owned(),
        false => "drill".to_owned(),
    };
    let mut cluster = Cluster {
        server,
        connection: scratch_connection(&data.path, &database),
        data,
        database,
    };
    cluster.wait_ready(&log, spec.timeout).await?;
    cluster.restore(spec, &bin).await?;
    let figures = cluster.figures().await?;
    Ok((cluster, figures))
}

impl Cluster {
    pub(super) fn socket_dir(&self) -> &Path {
        &self.data.path
    }

    pub(super) fn database(&self) -> &str {
        &self.database
    }

    async fn wait_ready(&mut self, log: &Path, timeout: Duration) -> Result<(), SourceError> {
        let config = self.connection.clone();
        let data = self.data.path.clone();
        wait_ready(&mut self.server, "postgres", log, timeout, || {
            let (config, data) = (config.clone(), data.clone());
            async move {
                match Connection::open(&config, &data) {
                    Ok(c) => c.admin("SELECT 1;\n").await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await
        .map_err(error)
    }

    /// Roles first, then the database created and loaded by `pg_restore`.
    async fn restore(&self, spec: &ScratchSpec<'_>, bin: &Path) -> Result<(), SourceError> {
        let connection = Connection::open(&self.connection, &self.data.path)?;
        create_missing_roles(spec.repo, spec.manifest, spec.part, &connection).await?;
        let exists = connection
            .admin(&format!(
                "SELECT 1 FROM pg_database WHERE datname = {};\n",
                literal(&self.database)
            ))
            .await?;
        if exists.trim().is_empty() {
            connection
                .admin(&format!(
                    "CREATE DATABASE {} TEMPLATE template0;\n",
                    ident(&self.database)
                ))
                .await?;
        }
        let pg_restore = match bin.join("pg_restore") {
            path if path.is_file() => path,
            _ => tool("pg_restore")?,
        };
        let mut command = connection.command(&pg_restore, &self.database);
        command.arg("--exit-on-error");
        feed_tool(
            &mut command,
            "pg_restore",
            spec.repo,
            spec.manifest,
            spec.part,
        )
        .await
        .map_err(|source| {
            error(DatabaseError::NotLoaded {
                name: self.database.clone(),
                source,
            })
        })
    }

    async fn figures(&self) -> Result<DatabaseFigures, SourceError> {
        let output = self
            .query(
                "SELECT format('%s.%s', n.nspname, c.relname) || '|' ||
                   (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                   AND n.nspname NOT LIKE 'pg_toast%'
                 ORDER BY 1;\n",
            )
            .await?;
        Ok(DatabaseFigures {
            tables: parse_counts(&output).map_err(error)?,
            ..Default::default()
        })
    }

    /// Runs SQL in the restored database; its unaligned, tuples-only output.
    pub(super) async fn query(&self, sql: &str) -> Result<String, SourceError> {
        let connection = Connection::open(&self.connection, &self.data.path)?;
        connection.query(&self.database, sql).await
    }

    pub(super) async fn stop(self) {
        self.server.stop().await;
    }
}

fn scratch_connection(data: &Path, database: &str) -> DatabaseConfig {
    DatabaseConfig {
        kind: DatabaseKind::Postgres,
        path: None,
        database: Some(database.to_owned()),
        host: Some(data.display().to_string()),
        port: None,
        user: Some(SUPERUSER.to_owned()),
        password_file: None,
        socket: None,
        rdb_path: None,
        stop: Vec::new(),
        start: Vec::new(),
    }
}

async fn initdb(bin: &Path, launch: &Launch<'_>, timeout: Duration) -> Result<(), SourceError> {
    let mut command = Command::new(bin.join("initdb"));
    command.args([
        "-D",
        DATA_PATH,
        "--username",
        SUPERUSER,
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    run_setup(&mut command, launch, timeout)
        .await
        .map_err(error)
}

/// The `bin` directory of the installed major version nearest at or above `major`.
fn server_bin(major: u32) -> Result<PathBuf, SourceError> {
    let usable = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let nearest = installed_versions()
        .into_iter()
        .filter(|(version, dir)| *version >= major && usable(dir))
        .min_by_key(|(version, _)| *version);
    if let Some((_, dir)) = nearest {
        return Ok(dir);
    }
    // Not a Debian layout: the tools on PATH, if both are there.
    match (find_tool(&["initdb"], &[]), find_tool(&["postgres"], &[])) {
        (Some(initdb), Some(_)) if installed_versions().is_empty() => {
            Ok(initdb.parent().map(Path::to_path_buf).unwrap_or_default())
        }
        _ => Err(error(DatabaseError::NotInstalled(format!(
            "a PostgreSQL {major} server or newer (initdb, postgres)"
        )))),
    }
}

async fn read_header(spec: &ScratchSpec<'_>) -> Result<DumpHeader, SourceError> {
    let first = spec
        .manifest
        .part(spec.part)
        .and_then(|p| p.chunks.first().copied())
        .ok_or_else(|| error(DatabaseError::DumpHeader("the part is empty".into())))?;
    let bytes = spec.repo.load_chunk(first).await?;
    parse_header(&bytes).map_err(|e| error(DatabaseError::DumpHeader(e)))
}

/// Reads the header `pg_dump --format=custom` writes (`pg_backup_archiver.c`,
/// `WriteHead`): magic, version, int and offset sizes, format, compression, the
/// creation date, then the database name and the server's and pg_dump's versions.
pub fn parse_header(bytes: &[u8]) -> Result<DumpHeader, String> {
    let mut reader = HeaderReader {
        bytes,
        at: 0,
        int_size: 4,
    };
    if reader.take(5)? != b"PGDMP" {
        return Err("not a pg_dump custom-format archive".into());
    }
    let version = (reader.byte()?, reader.byte()?, reader.byte()?);
    if version < (1, 10, 0) {
        return Err(format!(
            "archive version {}.{} is too old",
            version.0, version.1
        ));
    }
    reader.int_size = usize::from(reader.byte()?);
    if !(1..=8).contains(&reader.int_size) {
        return Err("bad integer size".into());
    }
    let _offset_size = reader.byte()?;
    let _format = reader.byte()?;
    if version >= (1, 15, 0) {
        reader.byte()?; // compression algorithm
    } else {
        reader.int()?; // compression level
    }
    for _ in 0..7 {
        reader.int()?; // creation date: sec, min, hour, day, month, year, isdst
    }
    let _database = reader.string()?;
    let server = reader.string()?;
    let server_major = server
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no server version in {server:?}"))?;
    Ok(DumpHeader { server_major })
}

struct HeaderReader<'a> {
    bytes: &'a [u8],
    at: usize,
    int_size: usize,
}

impl HeaderReader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or("the header is cut short")?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    /// A sign byte, then `int_size` bytes, least significant first.
    fn int(&mut self) -> Result<i64, String> {
        let negative = self.byte()? != 0;
        let mut magnitude: u64 = 0;
        for (i, b) in self.take(self.int_size)?.iter().enumerate() {
            magnitude |= u64::from(*b) << (8 * i);
        }
        // Eight bytes can hold more than an i64 (negating i64::MIN panicked: found by
        // the `pg_dump_header` fuzz target).
        let value = i64::try_from(magnitude).map_err(|_| "an integer out of range")?;
        Ok(if negative { -value } else { value })
    }

    /// A length, then that many bytes (a negative length is no string).
    fn string(&mut self) -> Result<String, String> {
        let len = self.int()?;
        if len < 0 {
            return Ok(String::new());
        }
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= 4096)
            .ok_or("bad string length")?;
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(value: i64) -> Vec<u8> {
        let mut out = vec![u8::from(value < 0)];
        out.extend_from_slice(&(value.unsigned_abs() as u32).to_le_bytes());
        out
    }

    fn string(text: &str) -> Vec<u8> {
        [int(text.len() as i64), text.as_bytes().to_vec()].concat()
    }

    #[test]
    fn the_header_names_the_database_and_the_server_major_version() {
        let mut header = b"PGDMP".to_vec();
        header.extend_from_slice(&[1, 14, 0, 4, 8, 1]);
        header.extend(int(0));
        for field in [5, 4, 3, 2, 1, 126, 0] {
            header.extend(int(field));
        }
        header.extend(string("shop"));
        header.extend(string("15.18 (Debian 15.18-0+deb12u1)"));
        header.extend(string("15.18"));
        assert_eq!(
            parse_header(&header).unwrap(),
            DumpHeader { server_major: 15 }
        );
        assert_eq!(
            parse_header(&header[..20]).unwrap_err(),
            "the header is cut short"
        );
        assert!(parse_header(b"SQLite format 3\0").is_err());
        // An eight-byte integer of -2^63 is out of range, not a panic.
        let mut wide = b"PGDMP".to_vec();
        wide.extend_from_slice(&[1, 15, 0, 8, 8, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x80]);
        assert_eq!(parse_header(&wide).unwrap_err(), "an integer out of range");
    }
}
