//! When each schedule last ran, so a restart neither loses nor doubles a run
//! (`schedule::due` decides from it). The run a backup is queued for is recorded in
//! the same transaction as the job (`Catalog::queue_scheduled_backup`).

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::db::Catalog;
use super::error::CatalogError;
use super::queue::record_run;
use super::records::{parse_time, time_text};

impl Catalog {
    /// When a schedule last ran; a schedule seen for the first time starts at `now`
    /// (it does not fire for times before it existed).
    pub fn schedule_last_run(
        &self,
        env: &str,
        schedule: &str,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, CatalogError> {
        let conn = self.lock();
        let found: Option<String> = conn
            .prepare_cached("SELECT last_run FROM schedule_runs WHERE env = ?1 AND schedule = ?2")?
            .query_row(params![env, schedule], |r| r.get(0))
            .optional()?;
        match found {
            Some(text) => parse_time(&text),
            None => {
                conn.execute(
                    "INSERT INTO schedule_runs (env, schedule, last_run) VALUES (?1, ?2, ?3)",
                    params![env, schedule, time_text(now)],
                )?;
                Ok(now)
            }
        }
    }

    pub fn set_schedule_last_run(
        &self,
        env: &str,
        schedule: &str,
        time: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        record_run(&self.lock(), env, schedule, time)?;
        Ok(())
    }
}
