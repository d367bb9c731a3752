//! What can go wrong with the catalog.

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "catalog {path} has schema version {found}, newer than this envsnap knows ({known}); upgrade envsnap"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("catalog query failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("catalog holds malformed data: {0}")]
    Malformed(String),
    #[error("catalog worker thread failed: {0}")]
    Worker(String),
}
