//! Why a database could not be dumped or loaded.
//!
//! A [`SourceError`] is either the repository's own error, passed through unchanged
//! (so a backup job still tells a store outage from a failed dump), or a
//! [`DatabaseError`] about one database. Each kind's module reports the problem
//! under its kind; the dispatcher in `mod.rs` fills in the database's name. The
//! message is one line: `database NAME (KIND): PROBLEM`.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::pg_roles::UnsafeRolesScript;
use super::replace::ReplaceError;
use super::secret::SecretError;
use super::tool::ToolError;
use crate::commands::CommandError;
use crate::repo::RepoError;

/// Why a database could not be dumped (or loaded).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("database {name} ({kind}): {problem}")]
    Dump {
        name: String,
        kind: &'static str,
        /// Boxed: the problem is large, and errors travel through every `Result`.
        problem: Box<DatabaseError>,
    },
    #[error(transparent)]
    Repo(#[from] RepoError),
}

impl SourceError {
    /// A problem of a `kind` database, whose name the dispatcher fills in.
    pub(super) fn unnamed(kind: &'static str, problem: impl Into<DatabaseError>) -> Self {
        SourceError::Dump {
            name: String::new(),
            kind,
            problem: Box::new(problem.into()),
        }
    }

    /// This error about the database `name` of `kind`.
    pub(super) fn named(self, name: &str, kind: &'static str) -> Self {
        match self {
            SourceError::Dump { problem, .. } => SourceError::Dump {
                name: name.to_owned(),
                kind,
                problem,
            },
            other => other,
        }
    }
}

/// What went wrong with one database.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("{0} is not installed (not on PATH)")]
    NotInstalled(String),
    /// A setting the kind needs is missing (validation normally prevents it).
    #[error("no {0} configured")]
    NotConfigured(&'static str),
    #[error("part {part} holds a {format:?} dump, which cannot be loaded into a {kind} database")]
    WrongFormat {
        part: String,
        format: String,
        kind: &'static str,
    },
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Replace(#[from] ReplaceError),

    // SQLite: the snapshot through the online backup API.
    #[error("{} does not exist or is not a file", .0.display())]
    NoDatabaseFile(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Snapshot {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The snapshot's blocking task panicked or was cancelled.
    #[error(transparent)]
    SnapshotTask(tokio::task::JoinError),

    // PostgreSQL: the roles companion and the swap of databases.
    #[error("part {part} is not a roles script ({format}, {size} bytes)")]
    NotRolesScript {
        part: String,
        format: String,
        size: u64,
    },
    #[error("reading part {part}: {source}")]
    ReadPart {
        part: String,
        source: Box<RepoError>,
    },
    #[error("listing the server's roles: {0}")]
    ListRoles(serde_json::Error),
    #[error(transparent)]
    UnsafeRoles(#[from] UnsafeRolesScript),
    #[error("creating the database's missing roles: {0}")]
    CreateRoles(Box<SourceError>),
    /// `pg_restore` failed; the new database was dropped.
    #[error("{source}; database {name} was left as it was")]
    NotLoaded { name: String, source: ToolError },

    // Redis: the server is stopped and started around the file's replacement.
    #[error("stop: {0}")]
    Stop(CommandError),
    #[error("start: {0}")]
    Start(CommandError),
    #[error("the server did not answer PING within {}s after start: {last}", timeout.as_secs())]
    NoPong { timeout: Duration, last: String },

    // Restore drills: the scratch servers and what they measured.
    #[error("scratch {tool} {problem}")]
    ScratchServer { tool: String, problem: String },
    #[error("measuring the restored database: {0}")]
    Figures(String),
    #[error("the dump's header cannot be read: {0}")]
    DumpHeader(String),
    #[error("the restored database fails its integrity check: {0}")]
    Integrity(String),
    #[error("{0}")]
    Query(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines people see are the ones from before the errors had types.
    #[test]
    fn a_message_names_the_database_its_kind_and_the_problem() {
        let missing = DatabaseError::NotInstalled("mariadb-dump or mysqldump".to_owned());
        assert_eq!(
            SourceError::unnamed("mariadb", missing)
                .named("shop", "mariadb")
                .to_string(),
            "database shop (mariadb): mariadb-dump or mysqldump is not installed (not on PATH)"
        );
        let silent = DatabaseError::NoPong {
            timeout: Duration::from_secs(30),
            last: "LOADING Redis is loading the dataset in memory".to_owned(),
        };
        assert_eq!(
            SourceError::unnamed("redis", silent)
                .named("cache", "redis")
                .to_string(),
            "database cache (redis): the server did not answer PING within 30s after start: \
             LOADING Redis is loading the dataset in memory"
        );
    }
}
