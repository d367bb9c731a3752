//! The catalog's connection: opened in WAL mode with full sync, migrated, behind one
//! mutex, and used from async code through [`Catalog::blocking`].

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;

use super::error::CatalogError;
use super::migrations;

/// A handle on the catalog; cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Catalog")
    }
}

impl Catalog {
    /// Opens (creating if needed) and migrates the catalog at `path`.
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        let name = path.display().to_string();
        let open_error = |source| CatalogError::Open {
            path: name.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(open_error)?;
        conn.pragma_update(None, "journal_mode", "wal")
            .map_err(open_error)?;
        conn.pragma_update(None, "synchronous", "full")
            .map_err(open_error)?;
        Self::from_connection(conn, &name)
    }

    /// A private catalog in memory: for tests, and for reading another host's store.
    pub fn in_memory() -> Result<Self, CatalogError> {
        Self::from_connection(Connection::open_in_memory()?, ":memory:")
    }

    fn from_connection(mut conn: Connection, name: &str) -> Result<Self, CatalogError> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "foreign_keys", "on")?;
        migrations::migrate(&mut conn, name)?;
        Ok(Catalog {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half transaction behind (SQLite
        // rolls it back), so a poisoned lock is still safe to use.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs catalog work on a blocking thread.
    pub async fn blocking<T, F>(&self, work: F) -> Result<T, CatalogError>
    where
        T: Send + 'static,
        F: FnOnce(&Catalog) -> Result<T, CatalogError> + Send + 'static,
    {
        let catalog = self.clone();
        tokio::task::spawn_blocking(move || work(&catalog))
            .await
            .map_err(|e| CatalogError::Worker(e.to_string()))?
    }
}
