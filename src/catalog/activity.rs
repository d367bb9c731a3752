//! The activity log: who did what to which environment and backup, with what
//! outcome. Only the catalog keeps it (a catalog rebuild cannot bring it back).
//! Entries that go with a state change are written in that change's transaction.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::db::Catalog;
use super::error::CatalogError;
use super::records::{ActivityEntry, parse_time, time_text};

impl Catalog {
    pub fn add_activity(&self, entry: &ActivityEntry) -> Result<(), CatalogError> {
        let conn = self.lock();
        insert_activity(&conn, entry)
    }

    /// Activity entries, oldest first, optionally for one environment and since a time.
    pub fn list_activity(
        &self,
        env: Option<&str>,
        since: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<ActivityEntry>, CatalogError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT time, user, env, action, backup, outcome, detail FROM (
                 SELECT * FROM activity WHERE (?1 IS NULL OR env = ?1) AND (?2 IS NULL OR time >= ?2)
                 ORDER BY id DESC LIMIT ?3)
             ORDER BY id",
        )?;
        let rows = stmt
            .query_map(params![env, since.map(time_text), limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(time, user, env, action, backup, outcome, detail)| {
                Ok(ActivityEntry {
                    time: parse_time(&time)?,
                    user,
                    env,
                    action,
                    backup,
                    outcome,
                    detail,
                })
            })
            .collect()
    }
}

pub(super) fn insert_activity(
    conn: &rusqlite::Connection,
    entry: &ActivityEntry,
) -> Result<(), CatalogError> {
    let detail = entry.detail.as_deref().map(crate::message::one_line);
    conn.execute(
        "INSERT INTO activity (time, user, env, action, backup, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![time_text(entry.time), entry.user, entry.env, entry.action, entry.backup, entry.outcome, detail],
    )?;
    Ok(())
}
