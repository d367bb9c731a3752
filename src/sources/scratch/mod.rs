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

mod definers;
mod mariadb;
mod part;
mod postgres;
mod redis;
mod server;
mod sqlite;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::error::{DatabaseError, SourceError};
use super::{format_for, kind_name};
use crate::config::DatabaseKind;

pub use part::{DatabaseFigures, ScratchSpec};
pub use server::{kill_leftovers_of, sweep};
// Decoders of bytes from the store, public for their fuzz targets (tests/fuzz).
pub use definers::{WithoutDefiners, strip_definers};
pub use postgres::{DumpHeader, parse_header as parse_postgres_dump_header};

/// A loaded scratch database.
pub struct Scratch {
    pub figures: DatabaseFigures,
    name: String,
    engine: Engine,
}

enum Engine {
    Sqlite { file: PathBuf },
    Postgres(Box<postgres::Cluster>),
    Mariadb(Box<mariadb::Instance>),
    Redis(Box<redis::Instance>),
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
            .map(|(c, f)| (Engine::Postgres(Box::new(c)), f)),
        DatabaseKind::Mariadb => mariadb::load(spec, &name)
            .await
            .map(|(i, f)| (Engine::Mariadb(Box::new(i)), f)),
        DatabaseKind::Redis => redis::load(spec)
            .await
            .map(|(i, f)| (Engine::Redis(Box::new(i)), f)),
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

/// The user scratch servers run as: `configured` (`daemon.drill_user`), else
/// `envsnap-drill` (the packages create it), else `nobody`. Never the host's own
/// `postgres` user by default: a hostile dump's SQL may run programs as the scratch
/// server's user (`COPY ... TO PROGRAM`), and that user must own nothing of the
/// host's.
pub fn drill_user(configured: Option<&str>) -> String {
    if let Some(name) = configured {
        return name.to_owned();
    }
    match nix::unistd::User::from_name("envsnap-drill") {
        Ok(Some(_)) => "envsnap-drill".to_owned(),
        _ => "nobody".to_owned(),
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
