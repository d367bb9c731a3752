//! Object Lock dates (`store.lock`): until when each object envsnap wrote is locked,
//! as far as this daemon knows, so that a backup lengthens only the locks that fall
//! short and prune knows what it may delete without asking the store. The store is
//! the truth: a date here may only be earlier than the real one (a lock lengthened
//! by another process), never later, so lengthening errs on the side of one request
//! too many. A date recorded as unknown (the epoch, after a catalog rebuild or when
//! a lock policy is first set) is lengthened by the next backup, and asked of the
//! store before anything is deleted.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::{ToSql, params};

use super::db::Catalog;
use super::error::CatalogError;
use super::records::{parse_time, time_text};

impl Catalog {
    /// Records that `keys` are locked until `until` (a later date already recorded
    /// stays). `shared` objects are lengthened by every backup ([`Self::locks_due`]).
    pub fn record_locks<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a str>,
        until: DateTime<Utc>,
        shared: bool,
    ) -> Result<(), CatalogError> {
        self.for_each_key(
            "INSERT INTO object_locks (key, until, shared) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET until = max(until, excluded.until),
                 shared = excluded.shared",
            keys,
            &[&time_text(until), &shared],
        )
    }

    /// Records shared objects whose lock is unknown (after a catalog rebuild): the
    /// next backup lengthens them. Keys already recorded keep their date.
    pub fn record_unknown_locks<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), CatalogError> {
        self.for_each_key(
            "INSERT OR IGNORE INTO object_locks (key, until, shared) VALUES (?1, ?2, 1)",
            keys,
            &[&time_text(DateTime::<Utc>::UNIX_EPOCH)],
        )
    }

    /// After a catalog rebuild: `keys` are indexed again, so shared (lengthened by
    /// the next backup) whatever was recorded; their dates stay.
    pub fn reshare_locks<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), CatalogError> {
        self.for_each_key(
            "INSERT INTO object_locks (key, until, shared) VALUES (?1, ?2, 1)
             ON CONFLICT (key) DO UPDATE SET shared = 1",
            keys,
            &[&time_text(DateTime::<Utc>::UNIX_EPOCH)],
        )
    }

    /// Objects under `dir/` that no backup needs any more (unshared by a prune)
    /// and that wait for their lock to pass.
    pub fn unneeded_locks(&self, dir: &str) -> Result<Vec<String>, CatalogError> {
        let conn = self.lock();
        let keys = conn
            .prepare_cached(
                "SELECT key FROM object_locks WHERE shared = 0 AND key >= ?1 AND key < ?2",
            )?
            .query_map(params![format!("{dir}/"), format!("{dir}0")], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(keys)
    }

    /// Shared objects locked for less than `until`: what a backup expiring then
    /// must lengthen.
    pub fn locks_due(&self, until: DateTime<Utc>) -> Result<Vec<String>, CatalogError> {
        let conn = self.lock();
        let keys = conn
            .prepare_cached("SELECT key FROM object_locks WHERE shared = 1 AND until < ?1")?
            .query_map([time_text(until)], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(keys)
    }

    /// The latest lock of any shared object.
    pub fn latest_shared_lock(&self) -> Result<Option<DateTime<Utc>>, CatalogError> {
        let conn = self.lock();
        let latest: Option<String> = conn.query_row(
            "SELECT max(until) FROM object_locks WHERE shared = 1",
            [],
            |r| r.get(0),
        )?;
        latest.as_deref().map(parse_time).transpose()
    }

    /// The recorded locks of those of `keys` the catalog knows.
    pub fn lock_dates(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, DateTime<Utc>>, CatalogError> {
        let conn = self.lock();
        let mut select = conn.prepare_cached("SELECT until FROM object_locks WHERE key = ?1")?;
        let mut dates = HashMap::new();
        for key in keys {
            let until: Option<String> =
                select
                    .query_row([key], |r| r.get(0))
                    .map(Some)
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        other => Err(other),
                    })?;
            if let Some(until) = until {
                dates.insert(key.clone(), parse_time(&until)?);
            }
        }
        Ok(dates)
    }

    /// `keys` are no longer needed: they stop being lengthened, and wait for their
    /// lock to pass before prune deletes them.
    pub fn unshare_locks(&self, keys: &[String]) -> Result<(), CatalogError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut update =
                tx.prepare_cached("UPDATE object_locks SET shared = 0 WHERE key = ?1")?;
            for key in keys {
                update.execute([key])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// `keys` were deleted from the store.
    pub fn forget_locks(&self, keys: &[String]) -> Result<(), CatalogError> {
        self.for_each_key(
            "DELETE FROM object_locks WHERE key = ?1",
            keys.iter().map(String::as_str),
            &[],
        )
    }

    /// Runs `sql` once per key (`?1`, then `rest` as `?2`...), in one transaction.
    fn for_each_key<'a>(
        &self,
        sql: &str,
        keys: impl IntoIterator<Item = &'a str>,
        rest: &[&dyn ToSql],
    ) -> Result<(), CatalogError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut statement = tx.prepare_cached(sql)?;
            for key in keys {
                let mut values: Vec<&dyn ToSql> = vec![&key];
                values.extend_from_slice(rest);
                statement.execute(values.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn day(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, d, 0, 0, 0).unwrap()
    }

    #[test]
    fn a_lock_is_only_ever_lengthened_and_only_shared_ones_fall_due() {
        let catalog = Catalog::in_memory().unwrap();
        catalog
            .record_locks(["packs/aa/1", "index/2"], day(20), true)
            .unwrap();
        catalog.record_locks(["packs/aa/1"], day(10), true).unwrap();
        catalog
            .record_locks(["manifests/web/b"], day(5), false)
            .unwrap();
        assert_eq!(catalog.locks_due(day(15)).unwrap(), Vec::<String>::new());
        let mut due = catalog.locks_due(day(25)).unwrap();
        due.sort();
        assert_eq!(due, ["index/2", "packs/aa/1"]);
        assert_eq!(catalog.latest_shared_lock().unwrap(), Some(day(20)));
        catalog.unshare_locks(&["index/2".into()]).unwrap();
        assert_eq!(catalog.locks_due(day(25)).unwrap(), ["packs/aa/1"]);
        catalog.unshare_locks(&["packs/aa/1".into()]).unwrap();
        assert_eq!(catalog.unneeded_locks("packs").unwrap(), ["packs/aa/1"]);
        assert_eq!(catalog.unneeded_locks("index").unwrap(), ["index/2"]);
        catalog.reshare_locks(["packs/aa/1"]).unwrap();
        assert!(catalog.unneeded_locks("packs").unwrap().is_empty());
        assert_eq!(
            catalog.lock_dates(&["packs/aa/1".into()]).unwrap()["packs/aa/1"],
            day(20)
        );
        let keys = ["manifests/web/b".to_owned(), "missing".to_owned()];
        let dates = catalog.lock_dates(&keys).unwrap();
        assert_eq!(dates.len(), 1);
        assert_eq!(dates["manifests/web/b"], day(5));
        catalog.forget_locks(&keys).unwrap();
        assert!(catalog.lock_dates(&keys).unwrap().is_empty());
    }

    #[test]
    fn unknown_locks_are_due_at_once_and_do_not_hide_known_ones() {
        let catalog = Catalog::in_memory().unwrap();
        catalog.record_locks(["packs/aa/1"], day(20), true).unwrap();
        catalog
            .record_unknown_locks(["packs/aa/1", "config"])
            .unwrap();
        assert_eq!(catalog.locks_due(day(2)).unwrap(), ["config"]);
    }
}
