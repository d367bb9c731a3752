//! PostgreSQL parts: `pg_dump` in custom format, restored with `pg_restore`.
//!
//! Backup streams `pg_dump --format=custom --compress=0` straight into the repository
//! (uncompressed, so the chunker deduplicates unchanged tables between backups; the
//! repository compresses). A download of the part is a file `pg_restore` reads as is.
//! A server newer than the host's `pg_dump` makes pg_dump refuse; its last stderr line
//! names both versions and is passed through.
//!
//! Restore never drops the old database before the new one is loaded:
//!
//! 1. create `NAME_envsnap_new` (template0, with the old database's owner, encoding
//!    and locale);
//! 2. load it with `pg_restore --single-transaction --exit-on-error`; on failure the
//!    new database is dropped and the old one was never touched;
//! 3. in one transaction: terminate the old database's sessions, rename it to
//!    `NAME_envsnap_old`, rename the new one to `NAME`;
//! 4. drop `NAME_envsnap_old`.
//!
//! Roles are cluster-wide: the dump names them but does not create them. The part's
//! `roles` companion holds `pg_dumpall --roles-only --no-role-passwords`, and a restore
//! first creates the roles the target server lacks ([`super::pg_roles`]), in one
//! transaction, before anything else changes. Passwords are never stored: a role
//! created by a restore has none until an operator sets it. Database-level settings
//! (`ALTER DATABASE ... SET`, grants on the database itself) are not carried over.
//!
//! The configured user needs `CREATEDB` and must own the database (or be a
//! superuser), and `CREATEROLE` to restore onto a server that lacks some of the
//! database's roles. Passwords reach the tools through a 0600 `PGPASSFILE`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::dump::{DumpStream, store_dump};
use super::error::{DatabaseError, SourceError};
use super::pg_roles;
use super::secret::{SecretFile, read_password};
use super::tool::{ToolError, feed_tool, find_tool, find_tool_in, run_tool};
use crate::config::DatabaseConfig;
use crate::repo::manifest::{Manifest, companion_name};
use crate::repo::writer::PartWriter;

pub const FORMAT: &str = "postgres-custom";
/// The `roles` companion: the SQL script `pg_dumpall --roles-only` prints.
pub const ROLES_FORMAT: &str = "postgres-roles-sql";
const ROLES: &str = "roles";
/// A roles script larger than this is not a roles script.
const MAX_ROLES_SCRIPT: u64 = 64 << 20;
const KIND: &str = "postgres";

fn error(problem: impl Into<DatabaseError>) -> SourceError {
    SourceError::unnamed(KIND, problem)
}

/// Debian and Ubuntu keep each major version's tools in their own directory; the
/// newest one reads the most server versions.
fn version_dirs() -> Vec<PathBuf> {
    installed_versions()
        .into_iter()
        .map(|(_, dir)| dir)
        .collect()
}

/// Each installed major version with its `bin` directory, newest first.
pub(super) fn installed_versions() -> Vec<(u32, PathBuf)> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    dirs.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    dirs
}

/// The tool `name`: the first on `PATH`, else the newest major version's. Debian's
/// `pg_wrapper` (what `/usr/bin/psql` and the others link to) is skipped for the
/// newest versioned binary: it is a Perl script that picks a version and runs it,
/// ~40 ms per run (a restore runs seven tools), and the newest version reads every
/// older server and archive.
pub(super) fn tool(name: &str) -> Result<PathBuf, SourceError> {
    let versioned = version_dirs();
    let found = find_tool(&[name], &versioned)
        .ok_or_else(|| error(DatabaseError::NotInstalled(name.to_owned())))?;
    if is_pg_wrapper(&found) {
        return Ok(find_tool_in(name, &versioned).unwrap_or(found));
    }
    Ok(found)
}

fn is_pg_wrapper(path: &Path) -> bool {
    std::fs::canonicalize(path).is_ok_and(|real| real.file_name() == Some("pg_wrapper".as_ref()))
}

/// Connection settings shared by every tool run for one database.
pub(super) struct Connection<'a> {
    db: &'a DatabaseConfig,
    /// PGPASSFILE, while the tools run.
    passfile: Option<SecretFile>,
}

impl<'a> Connection<'a> {
    pub(super) fn open(db: &'a DatabaseConfig, scratch: &Path) -> Result<Self, SourceError> {
        let passfile = match &db.password_file {
            Some(path) => {
                let password = read_password(path).map_err(error)?;
                let escaped = password.replace('\\', "\\\\").replace(':', "\\:");
                let line = format!("*:*:*:*:{escaped}\n");
                Some(SecretFile::create(scratch, "pgpass", &line).map_err(error)?)
            }
            None => None,
        };
        Ok(Connection { db, passfile })
    }

    fn database(&self) -> &str {
        self.db.database.as_deref().unwrap_or_default()
    }

    /// `program` with the connection flags and environment, connecting to `dbname`.
    pub(super) fn command(&self, program: &Path, dbname: &str) -> Command {
        self.command_with(program, "--dbname", dbname)
    }

    /// As [`Self::command`], naming the database with `database_flag` (pg_dumpall's
    /// `--dbname` is a connection string; its database is `--database`).
    fn command_with(&self, program: &Path, database_flag: &str, dbname: &str) -> Command {
        let mut command = Command::new(program);
        command.arg("--no-password");
        if let Some(host) = &self.db.host {
            command.arg("--host").arg(host);
        }
        if let Some(port) = self.db.port {
            command.arg("--port").arg(port.to_string());
        }
        if let Some(user) = &self.db.user {
            command.arg("--username").arg(user);
        }
        command.arg(database_flag).arg(dbname);
        command.env_remove("PGPASSWORD");
        if let Some(passfile) = &self.passfile {
            command.env("PGPASSFILE", passfile.path());
        }
        command
    }

    /// Runs SQL through psql on the maintenance database `postgres`; returns its
    /// unaligned, tuples-only output.
    pub(super) async fn admin(&self, sql: &str) -> Result<String, SourceError> {
        self.query("postgres", sql).await
    }

    /// Runs SQL through psql on `dbname`; returns its unaligned, tuples-only output.
    pub(super) async fn query(&self, dbname: &str, sql: &str) -> Result<String, SourceError> {
        let psql = tool("psql")?;
        let mut command = self.command(&psql, dbname);
        command.args([
            "--no-psqlrc",
            "--quiet",
            "--tuples-only",
            "--no-align",
            "--set",
            "ON_ERROR_STOP=1",
            "--file",
            "-",
        ]);
        run_tool(&mut command, "psql", sql.as_bytes())
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
    let pg_dump = tool("pg_dump")?;
    let pg_dumpall = tool("pg_dumpall")?;
    let connection = Connection::open(db, scratch)?;
    let mut command = connection.command(&pg_dump, connection.database());
    command.args(["--format=custom", "--compress=0"]);
    let (stream, failure) = DumpStream::spawn(&mut command, "pg_dump").map_err(error)?;
    // `connection` (and its PGPASSFILE) lives until the dumps have ended.
    store_dump(writer, part, FORMAT, KIND, stream, failure).await?;

    let mut command = connection.command_with(&pg_dumpall, "--database", connection.database());
    command.args(["--roles-only", "--no-role-passwords"]);
    let (stream, failure) = DumpStream::spawn(&mut command, "pg_dumpall").map_err(error)?;
    let roles = companion_name(part, ROLES);
    store_dump(writer, &roles, ROLES_FORMAT, KIND, stream, failure).await
}

/// Creates the roles of the backup's `roles` companion that the server lacks (a
/// backup without one, or a server that has them all, needs nothing).
pub(super) async fn create_missing_roles(
    repo: &crate::repo::Repository,
    manifest: &Manifest,
    part: &str,
    connection: &Connection<'_>,
) -> Result<(), SourceError> {
    let Some(roles) = manifest.companion(part, ROLES) else {
        return Ok(());
    };
    if roles.format != ROLES_FORMAT || roles.size > MAX_ROLES_SCRIPT {
        return Err(error(DatabaseError::NotRolesScript {
            part: roles.part.clone(),
            format: roles.format.clone(),
            size: roles.size,
        }));
    }
    let mut script = Vec::new();
    repo.read_stream(manifest, &roles.part, &mut script)
        .await
        .map_err(|source| {
            error(DatabaseError::ReadPart {
                part: roles.part.clone(),
                source: Box::new(source),
            })
        })?;
    let existing = connection
        .admin("SELECT coalesce(json_agg(rolname), '[]') FROM pg_roles;\n")
        .await?;
    let existing: HashSet<String> =
        serde_json::from_str(existing.trim()).map_err(|e| error(DatabaseError::ListRoles(e)))?;
    let statements = pg_roles::statements_for_missing(&String::from_utf8_lossy(&script), &existing)
        .map_err(error)?;
    if statements.is_empty() {
        return Ok(());
    }
    let sql = format!("BEGIN;\n{}\nCOMMIT;\n", statements.join("\n"));
    connection
        .admin(&sql)
        .await
        .map(|_| ())
        .map_err(|e| error(DatabaseError::CreateRoles(Box::new(e))))
}

/// Whether psql failed because other sessions use the database (a client that
/// reconnected between the terminate and the rename).
fn is_in_use(error: &SourceError) -> bool {
    let SourceError::Dump { problem, .. } = error else {
        return false;
    };
    matches!(
        &**problem,
        DatabaseError::Tool(ToolError::Failed { last_line, .. }) if last_line.contains("other users")
    )
}

/// `name` as an SQL identifier.
pub(super) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as an SQL string literal (standard_conforming_strings is on since 9.1).
pub(super) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `name` plus `suffix`, within PostgreSQL's 63-byte identifier limit.
fn with_suffix(name: &str, suffix: &str) -> String {
    let mut base = name.to_owned();
    while base.len() + suffix.len() > 63 {
        base.pop();
    }
    format!("{base}{suffix}")
}

pub async fn restore(
    repo: &crate::repo::Repository,
    manifest: &Manifest,
    part: &str,
    db: &DatabaseConfig,
    scratch: &Path,
) -> Result<(), SourceError> {
    let pg_restore = tool("pg_restore")?;
    let connection = Connection::open(db, scratch)?;
    let name = connection.database().to_owned();
    let staged = with_suffix(&name, "_envsnap_new");
    let retired = with_suffix(&name, "_envsnap_old");
    create_missing_roles(repo, manifest, part, &connection).await?;

    create_staged(&connection, &name, &staged, &retired).await?;

    let mut command = connection.command(&pg_restore, &staged);
    command.args(["--single-transaction", "--exit-on-error"]);
    if let Err(failure) = feed_tool(&mut command, "pg_restore", repo, manifest, part).await {
        let cleanup = connection
            .admin(&format!("DROP DATABASE IF EXISTS {};\n", ident(&staged)))
            .await;
        if let Err(e) = cleanup {
            tracing::warn!(database = %staged, error = %e, "could not drop the partly loaded database");
        }
        return Err(error(DatabaseError::NotLoaded {
            name,
            source: failure,
        }));
    }

    swap_in(&connection, &name, &staged, &retired).await
}

/// The empty database the dump is loaded into, made like the one it replaces
/// (owner, encoding, collation); leftovers of an interrupted restore dropped first.
/// One psql run: `\gexec` runs the `CREATE DATABASE` the query composes (plain,
/// when there is no database to copy the settings of).
async fn create_staged(
    connection: &Connection<'_>,
    name: &str,
    staged: &str,
    retired: &str,
) -> Result<(), SourceError> {
    connection
        .admin(&format!(
            "DROP DATABASE IF EXISTS {staged_ident};
DROP DATABASE IF EXISTS {retired_ident};
SELECT coalesce(
  (SELECT format('CREATE DATABASE %I TEMPLATE template0 OWNER %I ENCODING %L LC_COLLATE %L LC_CTYPE %L',
       {staged}, pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype)
     FROM pg_database WHERE datname = {name}),
  format('CREATE DATABASE %I TEMPLATE template0', {staged})) \\gexec
",
            staged_ident = ident(staged),
            retired_ident = ident(retired),
            staged = literal(staged),
            name = literal(name),
        ))
        .await?;
    Ok(())
}

/// The loaded database takes the old one's name in one transaction (retried while
/// clients reconnect), then the old copy is dropped.
async fn swap_in(
    connection: &Connection<'_>,
    name: &str,
    staged: &str,
    retired: &str,
) -> Result<(), SourceError> {
    let swap = format!(
        "BEGIN;
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
 WHERE datname = {old} AND pid <> pg_backend_pid();
SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_database WHERE datname = {old})
 THEN format('ALTER DATABASE %I RENAME TO %I', {old}, {retired}) ELSE 'SELECT 1' END \\gexec
ALTER DATABASE {staged_ident} RENAME TO {name_ident};
COMMIT;
",
        old = literal(name),
        retired = literal(retired),
        staged_ident = ident(staged),
        name_ident = ident(name),
    );
    // A client that reconnects between the terminate and the rename makes the rename
    // fail ("being accessed by other users"); the whole swap is retried.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match connection.admin(&swap).await {
            Ok(_) => break,
            Err(e) if attempt < 5 && is_in_use(&e) => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
    // The restore has taken effect; a leftover old copy is only wasted space, and the
    // next restore drops it.
    let drop_old = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = {};\nDROP DATABASE IF EXISTS {};\n",
        literal(retired),
        ident(retired)
    );
    if let Err(e) = connection.admin(&drop_old).await {
        tracing::warn!(database = %retired, error = %e, "could not drop the replaced database");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_suffixes() {
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(literal("it's"), "'it''s'");
        let long = "x".repeat(63);
        let staged = with_suffix(&long, "_envsnap_new");
        assert_eq!(staged.len(), 63);
        assert!(staged.ends_with("_envsnap_new"));
        assert_eq!(with_suffix("shop", "_envsnap_new"), "shop_envsnap_new");
    }

    #[test]
    fn debians_wrapper_is_recognised_through_its_links() {
        let dir = tempfile::tempdir().unwrap();
        let wrapper = dir.path().join("pg_wrapper");
        std::fs::write(&wrapper, "#!/usr/bin/perl\n").unwrap();
        std::os::unix::fs::symlink(&wrapper, dir.path().join("psql")).unwrap();
        let real = dir.path().join("pg_restore");
        std::fs::write(&real, "\x7fELF").unwrap();
        assert!(is_pg_wrapper(&dir.path().join("psql")));
        assert!(!is_pg_wrapper(&real));
        assert!(!is_pg_wrapper(&dir.path().join("missing")));
    }
}
