//! Export objects behind temporary links: recorded before they are uploaded, so that
//! one cut short by a crash is still deleted when its link expires.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::db::Catalog;
use super::error::CatalogError;
use super::records::{parse_time, time_text};

impl Catalog {
    pub fn add_export(&self, key: &str, expires: DateTime<Utc>) -> Result<(), CatalogError> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO exports (key, expires) VALUES (?1, ?2)",
            params![key, time_text(expires)],
        )?;
        Ok(())
    }

    pub fn set_export_expiry(&self, key: &str, expires: DateTime<Utc>) -> Result<(), CatalogError> {
        let conn = self.lock();
        conn.execute(
            "UPDATE exports SET expires = ?2 WHERE key = ?1",
            params![key, time_text(expires)],
        )?;
        Ok(())
    }

    /// Exports whose links have expired by `now`.
    pub fn expired_exports(&self, now: DateTime<Utc>) -> Result<Vec<String>, CatalogError> {
        let conn = self.lock();
        let keys = conn
            .prepare_cached("SELECT key FROM exports WHERE expires <= ?1 ORDER BY expires")?
            .query_map([time_text(now)], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(keys)
    }

    /// When the next export expires, if any does.
    pub fn next_export_expiry(&self) -> Result<Option<DateTime<Utc>>, CatalogError> {
        let conn = self.lock();
        let next: Option<String> =
            conn.query_row("SELECT min(expires) FROM exports", [], |r| r.get(0))?;
        next.as_deref().map(parse_time).transpose()
    }

    pub fn remove_export(&self, key: &str) -> Result<(), CatalogError> {
        let conn = self.lock();
        conn.execute("DELETE FROM exports WHERE key = ?1", [key])?;
        Ok(())
    }
}
