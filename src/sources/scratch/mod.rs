//! Scratch databases for restore drills: a backup's database part loaded into a
//! private copy of its engine, inside the drill's sandbox, and measured there.
//!
//! Each kind is loaded by its own engine, never into the live server:
//!
//! - SQLite: the file written into the sandbox, `PRAGMA integrity_check`, tables and
//!   row counts;
//! - PostgreSQL: a scratch cluster (`initdb` and `postgres` of the dump's major
//!   version, or the nearest newer one installed) with its Unix socket in the
//!   sandbox and no TCP listener, run as an unprivileged user (PostgreSQL refuses
//!   root) that reaches its data directory only through an inherited descriptor
//!   (`/proc/self/fd/3`), so the sandbox stays root's alone; the roles companion
//!   first, then `pg_restore --exit-on-error`; tables and exact row counts;
//! - MariaDB: a scratch `mariadbd` (`--skip-networking`, socket in the sandbox) loads
//!   the dump with the `mariadb` client; tables and exact row counts;
//! - Redis: a scratch `redis-server` (`--port 0`, socket in the sandbox) loads the
//!   RDB; the number of keys.
//!
//! A loaded database answers the operator's checks ([`Scratch::check`]: SQL that must
//! return true) and tells the operator's commands where it is
//! ([`Scratch::variables`]). [`Scratch::stop`] stops its server; `server.rs` makes
//! sure none outlives the drill or the daemon.

mod mariadb;
mod postgres;
mod redis;
mod server;
mod sqlite;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{DatabaseError, SourceError};
use super::{format_for, kind_name};
use crate::config::DatabaseKind;
use crate::repo::Repository;
use crate::repo::manifest::Manifest;

pub use server::sweep;

/// What a drill measured in a loaded database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseFigures {
    /// Table → exact row count (`schema.table` for PostgreSQL).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tables: BTreeMap<String, u64>,
    /// Redis: keys in all databases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// SQLite: what `PRAGMA integrity_check` said (`ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<String>,
}

/// One database part to load for a drill.
pub struct ScratchSpec<'a> {
    pub repo: &'a Repository,
    pub manifest: &'a Manifest,
    /// The backup's part (`database:NAME`).
    pub part: &'a str,
    pub kind: DatabaseKind,
    /// A private directory for this part (root, 0700), empty.
    pub dir: &'a Path,
    /// The unprivileged user for PostgreSQL.
    pub run_as: &'a str,
    /// Limit for starting a server and for each query.
    pub timeout: Duration,
}

/// A loaded scratch database.
pub struct Scratch {
    pub figures: DatabaseFigures,
    name: String,
    engine: Engine,
}

enum Engine {
    Sqlite { file: PathBuf },
    Postgres(postgres::Cluster),
    Mariadb(mariadb::Instance),
    Redis(redis::Instance),
}

/// Why an operator's check did not pass.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("returned {0:?}, not true")]
    False(String),
    #[error("did not finish within {}s", .0.as_secs())]
    Timeout(Duration),
    #[error(transparent)]
    Failed(#[from] SourceError),
}

/// Loads the part into a scratch copy of its engine and measures it.
pub async fn load(spec: &ScratchSpec<'_>) -> Result<Scratch, SourceError> {
    let name = spec.part.trim_start_matches("database:").to_owned();
    let kind = kind_name(spec.kind);
    let format = spec
        .manifest
        .part(spec.part)
        .map(|p| p.format.clone())
        .unwrap_or_default();
    if format != format_for(spec.kind) {
        return Err(SourceError::unnamed(
            kind,
            DatabaseError::WrongFormat {
                part: spec.part.to_owned(),
                format,
                kind,
            },
        )
        .named(&name, kind));
    }
    let loaded = match spec.kind {
        DatabaseKind::Sqlite => sqlite::load(spec)
            .await
            .map(|(file, figures)| (Engine::Sqlite { file }, figures)),
        DatabaseKind::Postgres => postgres::load(spec, &name)
            .await
            .map(|(c, f)| (Engine::Postgres(c), f)),
        DatabaseKind::Mariadb => mariadb::load(spec, &name)
            .await
            .map(|(i, f)| (Engine::Mariadb(i), f)),
        DatabaseKind::Redis => redis::load(spec).await.map(|(i, f)| (Engine::Redis(i), f)),
    };
    let (engine, figures) = loaded.map_err(|e| e.named(&name, kind))?;
    Ok(Scratch {
        figures,
        name,
        engine,
    })
}

impl Scratch {
    /// Runs `sql` in the restored database; it must answer true.
    pub async fn check(&self, sql: &str, timeout: Duration) -> Result<(), CheckError> {
        let answer = tokio::time::timeout(timeout, self.query(sql))
            .await
            .map_err(|_| CheckError::Timeout(timeout))??;
        match answer.trim() {
            "t" | "true" | "1" | "TRUE" => Ok(()),
            other => Err(CheckError::False(other.chars().take(80).collect())),
        }
    }

    async fn query(&self, sql: &str) -> Result<String, SourceError> {
        let kind = self.kind();
        let answer = match &self.engine {
            Engine::Sqlite { file } => sqlite::query(file, sql).await,
            Engine::Postgres(cluster) => cluster.query(sql).await,
            Engine::Mariadb(instance) => instance.query(sql).await,
            Engine::Redis(_) => Ok(String::new()),
        };
        answer.map_err(|e| e.named(&self.name, kind))
    }

    fn kind(&self) -> &'static str {
        match &self.engine {
            Engine::Sqlite { .. } => "sqlite",
            Engine::Postgres(_) => "postgres",
            Engine::Mariadb(_) => "mariadb",
            Engine::Redis(_) => "redis",
        }
    }

    /// Where the operator's commands find this database: `ENVSNAP_DRILL_<NAME>_...`.
    pub fn variables(&self) -> BTreeMap<String, String> {
        let prefix = format!("ENVSNAP_DRILL_{}", variable_name(&self.name));
        let mut vars = BTreeMap::new();
        let mut set = |what: &str, value: String| {
            vars.insert(format!("{prefix}_{what}"), value);
        };
        match &self.engine {
            Engine::Sqlite { file } => set("PATH", file.display().to_string()),
            Engine::Postgres(cluster) => {
                set("SOCKET", cluster.socket_dir().display().to_string());
                set("DATABASE", cluster.database().to_owned());
                set("USER", postgres::SUPERUSER.to_owned());
            }
            Engine::Mariadb(instance) => {
                set("SOCKET", instance.socket().display().to_string());
                set("DATABASE", self.name.clone());
            }
            Engine::Redis(instance) => set("SOCKET", instance.socket().display().to_string()),
        }
        vars
    }

    /// Stops the scratch server, if the engine has one.
    pub async fn stop(self) {
        match self.engine {
            Engine::Sqlite { .. } => {}
            Engine::Postgres(cluster) => cluster.stop().await,
            Engine::Mariadb(instance) => instance.stop().await,
            Engine::Redis(instance) => instance.stop().await,
        }
    }
}

/// A name as part of an environment variable: upper case, `_` for anything else.
pub fn variable_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            'a'..='z' => c.to_ascii_uppercase(),
            'A'..='Z' | '0'..='9' => c,
            _ => '_',
        })
        .collect()
}

/// Waits until `ready` says yes, the server exits, or `timeout` passes.
async fn wait_ready<F, Fut>(
    server: &mut server::Server,
    tool: &str,
    log: &Path,
    timeout: Duration,
    mut ready: F,
) -> Result<(), DatabaseError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if ready().await {
            return Ok(());
        }
        if server.has_exited() || tokio::time::Instant::now() >= deadline {
            let why = last_log_line(log);
            return Err(DatabaseError::ScratchServer {
                tool: tool.to_owned(),
                problem: if server.has_exited() {
                    format!("exited: {why}")
                } else {
                    format!("not ready within {}s: {why}", timeout.as_secs())
                },
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last non-empty line of a server's log.
fn last_log_line(log: &Path) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text[text.len().saturating_sub(4096)..]).into_owned();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no log")
        .trim()
        .to_owned()
}

/// A private directory (0700) for a server's data.
fn private_dir(path: &Path) -> Result<(), DatabaseError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|source| DatabaseError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Exact row counts of `tables`, from one query per table built by `count_sql`.
fn parse_counts(output: &str) -> Result<BTreeMap<String, u64>, DatabaseError> {
    let mut tables = BTreeMap::new();
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        let (name, count) = line
            .rsplit_once(['\t', '|'])
            .ok_or_else(|| DatabaseError::Figures(format!("unexpected line {line:?}")))?;
        let count = count
            .trim()
            .parse()
            .map_err(|_| DatabaseError::Figures(format!("unexpected count in {line:?}")))?;
        tables.insert(name.trim().to_owned(), count);
    }
    Ok(tables)
}
