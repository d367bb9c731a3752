//! The API's error: a stable wire code and a one-line message, and how the lower
//! layers' typed errors map onto codes.
//!
//! The mapping is the contract scripts rely on (`docs/protocol.md`): what a caller
//! can fix is `invalid`, `not_found`, `conflict` or `forbidden`; a job that ran and
//! failed is `failed`; only what the caller cannot act on is `internal`.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::catalog::{CatalogError, QueueError};
use crate::control::protocol::{ErrorCode, ErrorReply};
use crate::download::DownloadError;
use crate::jobs::prune::PruneError;
use crate::repo::RepoError;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

/// A result, serialized once, straight from the records (no intermediate `Value`
/// tree: a listing of ten thousand backups would spend most of its time building one).
pub type Outcome = Result<Box<RawValue>, ApiError>;

pub fn to_value(value: impl Serialize) -> Outcome {
    serde_json::value::to_raw_value(&value)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Invalid, message)
    }

    /// A new job asked for while the daemon stops.
    pub fn shutting_down() -> Self {
        ApiError::new(
            ErrorCode::ShuttingDown,
            "envsnapd is shutting down and takes no new jobs",
        )
    }

    /// A backup name that is not `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
    pub fn bad_backup_name(name: &str) -> Self {
        ApiError::invalid(format!(
            "invalid backup name {name:?}: use 1-64 of A-Z a-z 0-9 . _ - starting with a letter or digit"
        ))
    }
}

impl From<ApiError> for ErrorReply {
    fn from(e: ApiError) -> Self {
        ErrorReply::new(e.code, e.message)
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        ApiError::new(ErrorCode::Internal, e.to_string())
    }
}

impl From<QueueError> for ApiError {
    /// A name taken or an environment busy is a conflict the caller can resolve.
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Catalog(e) => e.into(),
            other => ApiError::new(ErrorCode::Conflict, other.to_string()),
        }
    }
}

impl From<DownloadError> for ApiError {
    fn from(e: DownloadError) -> Self {
        match e {
            DownloadError::Repo(e) => e.into(),
            DownloadError::Invalid(message) => ApiError::invalid(message),
            output => ApiError::new(ErrorCode::Internal, output.to_string()),
        }
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        let code = match &e {
            RepoError::NoSuchBackup(_) | RepoError::NoSuchPart(_) => ErrorCode::NotFound,
            RepoError::BadName(_) => ErrorCode::Invalid,
            _ => ErrorCode::Internal,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<PruneError> for ApiError {
    /// Nothing a prune meets is the caller's to fix: the catalog or the store failed.
    fn from(e: PruneError) -> Self {
        ApiError::new(ErrorCode::Internal, e.to_string())
    }
}
