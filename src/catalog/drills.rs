//! Restore drills: each finished drill's report, by host and job id. The report is
//! also in the store next to the backup's manifest (`repo::evidence`), so `catalog
//! rebuild` brings back the drills of every backup still in the store.

use rusqlite::{OptionalExtension, params};

use super::activity::insert_activity;
use super::db::Catalog;
use super::error::CatalogError;
use super::jobs::end_job;
use super::records::{ActivityEntry, DrillRecord, JobState, parse_time, time_text};

const COLUMNS: &str = "id, host, env, backup, started, finished, outcome, error, warnings";

fn read_drill(row: &rusqlite::Row<'_>) -> rusqlite::Result<(DrillRecord, [String; 2])> {
    Ok((
        DrillRecord {
            id: row.get(0)?,
            host: row.get(1)?,
            env: row.get(2)?,
            backup: row.get(3)?,
            started: Default::default(),
            finished: Default::default(),
            outcome: row.get(6)?,
            error: row.get(7)?,
            warnings: row.get(8)?,
            report: serde_json::Value::Null,
        },
        [row.get(4)?, row.get(5)?],
    ))
}

fn with_times(
    (mut drill, [started, finished]): (DrillRecord, [String; 2]),
) -> Result<DrillRecord, CatalogError> {
    drill.started = parse_time(&started)?;
    drill.finished = parse_time(&finished)?;
    Ok(drill)
}

impl Catalog {
    /// A drill job ended: its report, the job's state and the activity entry, at once.
    pub fn finish_drill(
        &self,
        drill: &DrillRecord,
        state: JobState,
        activity: &ActivityEntry,
    ) -> Result<(), CatalogError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        insert_drill(&tx, drill)?;
        end_job(&tx, drill.id, state, drill.error.as_deref())?;
        insert_activity(&tx, activity)?;
        tx.commit()?;
        Ok(())
    }

    /// Records a drill found in the store (`catalog rebuild`): the same host and id
    /// replace the row.
    pub fn record_drill(&self, drill: &DrillRecord) -> Result<(), CatalogError> {
        insert_drill(&self.lock(), drill)
    }

    /// The drills of `env`, newest first, without their reports.
    pub fn list_drills(&self, env: &str, limit: u32) -> Result<Vec<DrillRecord>, CatalogError> {
        let conn = self.lock();
        let rows = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM drills WHERE env = ?1 ORDER BY finished DESC, id DESC LIMIT ?2"
            ))?
            .query_map(params![env, limit], read_drill)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(with_times).collect()
    }

    /// One drill of this host with its report.
    pub fn get_drill(&self, host: &str, id: i64) -> Result<Option<DrillRecord>, CatalogError> {
        let conn = self.lock();
        let found = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS}, report FROM drills WHERE host = ?1 AND id = ?2"
            ))?
            .query_row(params![host, id], |r| {
                Ok((read_drill(r)?, r.get::<_, String>(9)?))
            })
            .optional()?;
        let Some((row, report)) = found else {
            return Ok(None);
        };
        let mut drill = with_times(row)?;
        drill.report = serde_json::from_str(&report)
            .map_err(|e| CatalogError::Malformed(format!("drill {id}: {e}")))?;
        Ok(Some(drill))
    }

    /// The newest drill of `env`, with its report (for comparing figures).
    pub fn last_drill(&self, env: &str) -> Result<Option<DrillRecord>, CatalogError> {
        let newest: Option<(String, i64)> = {
            let conn = self.lock();
            conn.query_row(
                "SELECT host, id FROM drills WHERE env = ?1 ORDER BY finished DESC, id DESC LIMIT 1",
                [env],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
        };
        match newest {
            Some((host, id)) => self.get_drill(&host, id),
            None => Ok(None),
        }
    }
}

fn insert_drill(conn: &rusqlite::Connection, drill: &DrillRecord) -> Result<(), CatalogError> {
    conn.execute(
        "INSERT INTO drills (id, host, env, backup, started, finished, outcome, error, warnings, report)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (host, id) DO UPDATE SET env = excluded.env, backup = excluded.backup,
             started = excluded.started, finished = excluded.finished, outcome = excluded.outcome,
             error = excluded.error, warnings = excluded.warnings, report = excluded.report",
        params![
            drill.id,
            drill.host,
            drill.env,
            drill.backup,
            time_text(drill.started),
            time_text(drill.finished),
            drill.outcome,
            drill.error.as_deref().map(crate::message::one_line),
            drill.warnings,
            drill.report.to_string(),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn drill(id: i64, outcome: &str) -> DrillRecord {
        DrillRecord {
            id,
            env: "live".into(),
            host: "h1".into(),
            backup: format!("b{id}"),
            started: Utc::now(),
            finished: Utc::now() + chrono::Duration::seconds(id),
            outcome: outcome.into(),
            error: (outcome == "failed").then(|| "database main (sqlite): bad\nline".into()),
            warnings: 1,
            report: serde_json::json!({ "id": id }),
        }
    }

    #[test]
    fn drills_are_recorded_listed_and_replaced_by_host_and_id() {
        let catalog = Catalog::in_memory().unwrap();
        catalog.record_drill(&drill(1, "passed")).unwrap();
        catalog.record_drill(&drill(2, "failed")).unwrap();
        catalog.record_drill(&drill(2, "failed")).unwrap();
        let listed = catalog.list_drills("live", 10).unwrap();
        assert_eq!(listed.iter().map(|d| d.id).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(
            listed[0].error.as_deref(),
            Some("database main (sqlite): bad line")
        );
        assert!(listed[0].report.is_null(), "lists leave the report out");
        let last = catalog.last_drill("live").unwrap().unwrap();
        assert_eq!(last.report, serde_json::json!({ "id": 2 }));
        assert!(catalog.get_drill("h2", 1).unwrap().is_none());
        // Rebuilt drills up to id 2: a new drill's id comes after theirs.
        let job = catalog
            .queue_drill("live", "root", "b3", "{}", None)
            .unwrap();
        assert_eq!(job.id, 3);
    }
}
