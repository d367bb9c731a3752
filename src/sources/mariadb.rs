//! MariaDB/MySQL parts: `mariadb-dump` (or `mysqldump`), restored with `mariadb`.
//!
//! Backup streams `mariadb-dump --single-transaction --routines --triggers --events
//! --hex-blob DB` into the repository: a consistent snapshot of InnoDB tables without
//! locking them, with views, triggers, stored routines and events, and binary columns
//! as hex so no byte is mangled by a character set. The database is named as an
//! argument, not with `--databases`, so the dump has no `CREATE DATABASE`/`USE`: it
//! loads into whatever database a restore targets (a `test` environment restored
//! from `live` with another database name). A download is a SQL file that
//! `mariadb DB < FILE` loads as is.
//!
//! Restore reads the database's default character set and collation, drops it,
//! creates it again with them, and loads the dump with the `mariadb` client. MariaDB
//! cannot rename a database, so unlike PostgreSQL a failed load leaves the database
//! partly loaded; the restore job then rolls the environment back from its safety
//! backup. Users and grants are server-wide and not part of the dump.
//!
//! Credentials go in a 0600 `--defaults-extra-file` (removed after the run), never on
//! the command line.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::dump::{DumpStream, store_dump};
use super::error::{DatabaseError, SourceError};
use super::secret::{SecretFile, read_password};
use super::tool::{feed_tool, find_tool, run_tool};
use crate::config::DatabaseConfig;
use crate::repo::writer::PartWriter;

pub const FORMAT: &str = "mariadb-sql";
const KIND: &str = "mariadb";

fn error(problem: impl Into<DatabaseError>) -> SourceError {
    SourceError::unnamed(KIND, problem)
}

/// The first installed of `names` (MariaDB's names first, then MySQL's).
pub(super) fn tool(names: &[&str]) -> Result<(PathBuf, String), SourceError> {
    let path = find_tool(names, &[])
        .ok_or_else(|| error(DatabaseError::NotInstalled(names.join(" or "))))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((path, name))
}

/// A value in an option file: quoted, with backslashes and quotes escaped.
fn option_value(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The connection for one restore or backup: its options file lives as long as this.
pub(super) struct Connection<'a> {
    db: &'a DatabaseConfig,
    options: SecretFile,
}

impl<'a> Connection<'a> {
    pub(super) fn open(db: &'a DatabaseConfig, scratch: &Path) -> Result<Self, SourceError> {
        let mut text = String::from("[client]\n");
        if let Some(user) = &db.user {
            text.push_str(&format!("user={}\n", option_value(user)));
        }
        if let Some(path) = &db.password_file {
            let password = read_password(path).map_err(error)?;
            text.push_str(&format!("password={}\n", option_value(&password)));
        }
        let options = SecretFile::create(scratch, "mariadb-client", &text).map_err(error)?;
        Ok(Connection { db, options })
    }

    fn database(&self) -> &str {
        self.db.database.as_deref().unwrap_or_default()
    }

    pub(super) fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        // Must be the first option.
        command.arg(format!(
            "--defaults-extra-file={}",
            self.options.path().display()
        ));
        if let Some(socket) = &self.db.socket {
            command.arg(format!("--socket={}", socket.display()));
        }
        if let Some(host) = &self.db.host {
            command.arg(format!("--host={host}"));
        }
        if let Some(port) = self.db.port {
            command.arg(format!("--port={port}"));
        }
        command
            .arg("--default-character-set=utf8mb4")
            .env_remove("MYSQL_PWD");
        command
    }

    /// Runs SQL with the client, no database selected; returns tab-separated rows.
    pub(super) async fn admin(&self, sql: &str) -> Result<String, SourceError> {
        self.query(None, sql).await
    }

    /// Runs SQL with the client in `database`; returns tab-separated rows.
    pub(super) async fn query(
        &self,
        database: Option<&str>,
        sql: &str,
    ) -> Result<String, SourceError> {
        let (client, name) = tool(&["mariadb", "mysql"])?;
        let mut command = self.command(&client);
        command.args(["--batch", "--skip-column-names"]);
        if let Some(database) = database {
            command.arg(format!("--database={database}"));
        }
        run_tool(&mut command, &name, sql.as_bytes())
            .await
            .map_err(error)
    }
}

pub async fn backup(
    writer: &PartWriter,
    part: &str,
    db: &DatabaseConfig,
    scratch: &Path,
) -> Result<(), SourceError> {
    let (dump, name) = tool(&["mariadb-dump", "mysqldump"])?;
    let connection = Connection::open(db, scratch)?;
    let mut command = connection.command(&dump);
    command.args([
        "--single-transaction",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--",
        connection.database(),
    ]);
    let (stream, failure) = DumpStream::spawn(&mut command, &name).map_err(error)?;
    store_dump(writer, part, FORMAT, KIND, stream, failure).await
}

/// `name` as an identifier.
pub(super) fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `text` as a string literal.
pub(super) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

pub async fn restore(
    repo: &crate::repo::Repository,
    manifest: &crate::repo::manifest::Manifest,
    part: &str,
    db: &DatabaseConfig,
    scratch: &Path,
) -> Result<(), SourceError> {
    let (client, client_name) = tool(&["mariadb", "mysql"])?;
    let connection = Connection::open(db, scratch)?;
    let name = connection.database().to_owned();
    let charset = connection
        .admin(&format!(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {};\n",
            literal(&name)
        ))
        .await?;
    let create_options = match charset.trim().split_once('\t') {
        Some((set, collation)) => format!(
            " CHARACTER SET {} COLLATE {}",
            ident(set.trim()),
            ident(collation.trim())
        ),
        None => String::new(),
    };
    connection
        .admin(&format!(
            "DROP DATABASE IF EXISTS {db};\nCREATE DATABASE {db}{create_options};\n",
            db = ident(&name)
        ))
        .await?;
    let mut command = connection.command(&client);
    command.args(["--binary-mode", "--", &name]);
    feed_tool(&mut command, &client_name, repo, manifest, part)
        .await
        .map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident("a`b"), "`a``b`");
        assert_eq!(literal("it's \\"), "'it''s \\\\'");
        assert_eq!(option_value("p\"w\\d"), "\"p\\\"w\\\\d\"");
    }
}
