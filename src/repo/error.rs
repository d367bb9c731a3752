//! The storage engine's errors: one enum, [`RepoError`], for every repository
//! operation. Store and catalog errors pass through unchanged (so a caller can still
//! tell a transient store error from a permanent one); a damaged object names itself
//! and a failed part names the part.

use super::crypto;
use super::format::REPO_FORMAT;
use super::pack::DecodeError;
use crate::catalog::CatalogError;
use crate::store::StoreError;

/// Errors of the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Key(#[from] crypto::KeyError),
    #[error("no repository at {location} (no config object); initialise it first")]
    NoRepository { location: String },
    #[error("store {location} lost its repository (no config object): is it mounted?")]
    RepositoryLost { location: String },
    #[error("a repository already exists at {location}")]
    AlreadyExists { location: String },
    #[error("repository format {found} is not supported (this envsnap reads format {REPO_FORMAT})")]
    UnsupportedFormat { found: u32 },
    #[error("repository config is invalid: {0}")]
    BadConfig(String),
    #[error("the repository is encrypted: a key file is needed")]
    KeyRequired,
    #[error("the repository is not encrypted, but a key file was given")]
    KeyNotExpected,
    #[error("wrong key: the key file does not match this repository")]
    WrongKey,
    #[error("chunk {chunk} is not in the index")]
    UnknownChunk { chunk: String },
    #[error("object {object}: {reason}")]
    Corrupt { object: String, reason: String },
    #[error("part {part}: {source}")]
    InPart {
        part: String,
        source: Box<RepoError>,
    },
    #[error("backup {0} not found")]
    NoSuchBackup(String),
    #[error("backup has no part {0}")]
    NoSuchPart(String),
    #[error("part {part} is a {found}, not a {wanted}")]
    WrongLayout {
        part: String,
        found: &'static str,
        wanted: &'static str,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "invalid name {0:?}: names are 1-64 of A-Z a-z 0-9 . _ - and start with a letter or digit"
    )]
    BadName(String),
    #[error("cancelled")]
    Cancelled,
    #[error("the write pipeline stopped: {0}")]
    Pipeline(String),
    /// A restored tree is not what its backup holds (a restore drill's check).
    #[error("restored {part} differs from the backup at {path:?}: {problem}")]
    Differs {
        part: String,
        path: String,
        problem: String,
    },
    /// A part's source (a database dump) failed; the message names it.
    #[error("{0}")]
    Source(String),
}

impl RepoError {
    pub(crate) fn in_part(self, part: &str) -> Self {
        match self {
            already @ RepoError::InPart { .. } => already,
            other => RepoError::InPart {
                part: part.to_owned(),
                source: Box::new(other),
            },
        }
    }

    pub(crate) fn corrupt(object: impl Into<String>, error: DecodeError) -> Self {
        RepoError::Corrupt {
            object: object.into(),
            reason: error.to_string(),
        }
    }

    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        RepoError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
