//! Why a restore (or the rollback after it) failed.

use crate::catalog::CatalogError;
use crate::commands::CommandError;
use crate::repo::RepoError;
use crate::sources::SourceError;

/// What made a restore fail (or its rollback, for the restore of the safety backup).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the job's arguments are missing or unreadable")]
    NoArguments,
    #[error("environment {0} is no longer in the config")]
    EnvironmentGone(String),
    #[error("opening the backup's repository: {0}")]
    SourceRepository(RepoError),
    #[error("reading backup {backup}: {source}")]
    Manifest { backup: String, source: RepoError },
    #[error("the safety backup failed: {0}")]
    SafetyBackup(RepoError),
    #[error("recording the safety backup: {0}")]
    RecordSafetyBackup(CatalogError),
    #[error("recording the restore's progress: {0}")]
    RecordProgress(CatalogError),
    #[error("app.{step} failed: {source}")]
    App {
        step: &'static str,
        source: CommandError,
    },
    #[error("environment {env} has no part {part}")]
    NoSuchPart { env: String, part: String },
    #[error("restoring {part}: {source}")]
    Tree { part: String, source: RepoError },
    #[error("restoring {part}: {source}")]
    Database { part: String, source: SourceError },
}
