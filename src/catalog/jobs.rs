//! Jobs in the catalog, once queued (`queue.rs`): read, started, finished.
//!
//! Jobs move `queued → running → succeeded | failed | cancelled`; each move is one
//! transaction together with whatever it changes (a backup row, an environment's
//! status, an activity entry). At start-up, [`Catalog::recover_interrupted`] fails the
//! jobs a crash left running and drops their half backups.

use chrono::Utc;
use rusqlite::{OptionalExtension, params};

use super::activity::insert_activity;
use super::backups::{CompletedBackup, complete_backup, remove_backup, set_env_status};
use super::db::Catalog;
use super::error::CatalogError;
use super::records::{
    ActivityEntry, JobCounts, JobKind, JobRecord, JobState, parse_time, time_text,
};

pub(super) const JOB_COLUMNS: &str =
    "id, kind, env, state, user, backup, error, created, started, finished";

/// A job row as stored: kind, state and times still text. A catalog written by a
/// newer envsnap may hold kinds this one does not know: such a row must not make a
/// whole query fail (the queue would stop, or the daemon would not start), so it is
/// read as text and dealt with row by row ([`JobRow::is_known`]).
pub(super) struct JobRow {
    pub(super) id: i64,
    kind: String,
    env: Option<String>,
    state: String,
    user: String,
    backup: Option<String>,
    error: Option<String>,
    created: String,
    started: Option<String>,
    finished: Option<String>,
}

pub(super) fn read_job(row: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: row.get(0)?,
        kind: row.get(1)?,
        env: row.get(2)?,
        state: row.get(3)?,
        user: row.get(4)?,
        backup: row.get(5)?,
        error: row.get(6)?,
        created: row.get(7)?,
        started: row.get(8)?,
        finished: row.get(9)?,
    })
}

impl JobRow {
    pub(super) fn is_known(&self) -> bool {
        self.kind.parse::<JobKind>().is_ok() && self.state.parse::<JobState>().is_ok()
    }
}

pub(super) fn into_job(row: JobRow) -> Result<JobRecord, CatalogError> {
    let malformed = |e: String| CatalogError::Malformed(format!("job {}: {e}", row.id));
    Ok(JobRecord {
        id: row.id,
        kind: row.kind.parse().map_err(malformed)?,
        env: row.env,
        state: row.state.parse().map_err(malformed)?,
        user: row.user,
        backup: row.backup,
        error: row.error,
        created: parse_time(&row.created)?,
        started: row.started.as_deref().map(parse_time).transpose()?,
        finished: row.finished.as_deref().map(parse_time).transpose()?,
    })
}

impl Catalog {
    /// Backups that active jobs rely on, as (environment, backup name): the sources of
    /// queued or running restores and drills, and the safety backups of running
    /// restores.
    pub fn backups_in_use(&self) -> Result<Vec<(String, String)>, CatalogError> {
        let conn = self.lock();
        let mut used = Vec::new();
        let mut restores = conn.prepare_cached(
            "SELECT args FROM jobs WHERE kind IN ('restore', 'import', 'drill') AND state IN ('queued', 'running')",
        )?;
        for args in restores.query_map([], |r| r.get::<_, Option<String>>(0))? {
            let Some(args) = args? else { continue };
            let value: serde_json::Value = serde_json::from_str(&args).unwrap_or_default();
            if value["source_host"].is_null()
                && let (Some(env), Some(backup)) =
                    (value["source_env"].as_str(), value["backup"].as_str())
            {
                used.push((env.to_owned(), backup.to_owned()));
            }
        }
        let mut safety = conn.prepare_cached(
            "SELECT name, safety_backup FROM environments WHERE status = 'updating' AND safety_backup IS NOT NULL",
        )?;
        for row in safety.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
            used.push(row?);
        }
        Ok(used)
    }

    /// Environments that have backups in the catalog.
    pub fn backup_envs(&self) -> Result<Vec<String>, CatalogError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT DISTINCT env FROM backups ORDER BY env")?;
        Ok(stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
    }

    /// A job's JSON arguments, if it has any.
    pub fn job_args(&self, id: i64) -> Result<Option<String>, CatalogError> {
        let conn = self.lock();
        Ok(conn
            .query_row("SELECT args FROM jobs WHERE id = ?1", [id], |r| r.get(0))
            .optional()?
            .flatten())
    }

    pub fn get_job(&self, id: i64) -> Result<Option<JobRecord>, CatalogError> {
        let conn = self.lock();
        let found = conn
            .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
            .query_row([id], read_job)
            .optional()?;
        found.map(into_job).transpose()
    }

    /// The newest jobs first.
    /// The newest failed job of `env`, if any.
    pub fn last_failed_job(&self, env: &str) -> Result<Option<JobRecord>, CatalogError> {
        let row = {
            let conn = self.lock();
            conn.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE env = ?1 AND state = 'failed'
                 ORDER BY id DESC LIMIT 1"
            ))?
            .query_row([env], read_job)
            .optional()?
        };
        row.filter(JobRow::is_known).map(into_job).transpose()
    }

    pub fn list_jobs(&self, limit: u32) -> Result<Vec<JobRecord>, CatalogError> {
        let conn = self.lock();
        let rows = conn
            .prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs ORDER BY id DESC LIMIT ?1"
            ))?
            .query_map([limit], read_job)?
            .collect::<Result<Vec<_>, _>>()?;
        // Jobs of kinds a newer envsnap made are not listed here.
        rows.into_iter()
            .filter(JobRow::is_known)
            .map(into_job)
            .collect()
    }

    /// Queued jobs that may start now: oldest first, at most one per environment
    /// (counting running ones), and no more than `slots`.
    pub fn runnable_jobs(&self, slots: usize) -> Result<Vec<JobRecord>, CatalogError> {
        let conn = self.lock();
        let rows = conn
            .prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'queued'
                 AND (env IS NULL OR env NOT IN (SELECT env FROM jobs WHERE state = 'running' AND env IS NOT NULL))
                 ORDER BY id"
            ))?
            .query_map([], read_job)?
            .collect::<Result<Vec<_>, _>>()?;
        let mut envs = std::collections::HashSet::new();
        let mut chosen = Vec::new();
        for row in rows {
            if !row.is_known() {
                // Queued by a newer envsnap: this one cannot run it, and says so.
                let error = format!("unknown job kind {:?}", row.kind);
                end_job(&conn, row.id, JobState::Failed, Some(&error))?;
                continue;
            }
            let job = into_job(row)?;
            // Jobs without an environment (prune) run alone, one at a time.
            let key = job.env.clone().unwrap_or_default();
            if chosen.len() < slots && envs.insert(key) {
                chosen.push(job);
            }
        }
        Ok(chosen)
    }

    /// Marks a job running and, for a backup, its environment `backing-up`.
    /// Returns false when the job is no longer queued (cancelled meanwhile).
    pub fn start_job(&self, id: i64) -> Result<bool, CatalogError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let started: Option<(String, Option<String>)> = tx
            .query_row(
                "UPDATE jobs SET state = 'running', started = ?2 WHERE id = ?1 AND state = 'queued' RETURNING kind, env",
                params![id, time_text(Utc::now())],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((kind, env)) = started else {
            return Ok(false);
        };
        // A kind this envsnap does not know changes no environment (it fails at once).
        let kind = kind.parse::<JobKind>().ok();
        if kind == Some(JobKind::Restore) {
            // A new restore: the safety backup named is the one it is about to make.
            // A restore *of* that safety backup (a rollback) keeps it, and keeps the
            // mark of a half-replaced environment: killed before it changes anything
            // itself, the environment is still half replaced.
            if let Some(env) = env.as_deref() {
                tx.execute(
                    "UPDATE environments SET
                         safety_backup = CASE WHEN safety_backup = (SELECT backup FROM jobs WHERE id = ?2)
                             THEN safety_backup END,
                         changing = CASE WHEN safety_backup = (SELECT backup FROM jobs WHERE id = ?2)
                             THEN changing ELSE 0 END
                     WHERE name = ?1",
                    params![env, id],
                )?;
            }
        }
        // Only a restore changes the environment; an import stores a backup beside it.
        if let (Some(env), Some(JobKind::Restore)) = (env.as_deref(), kind) {
            tx.execute(
                "INSERT INTO environments (name, status) VALUES (?1, 'updating')
                 ON CONFLICT (name) DO UPDATE SET status = 'updating'",
                [env],
            )?;
        }
        if let (Some(env), Some(JobKind::Backup)) = (env.as_deref(), kind) {
            let last_error: Option<String> = tx
                .query_row(
                    "SELECT last_error FROM environments WHERE name = ?1",
                    [env],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            let status: Option<String> = tx
                .query_row(
                    "SELECT status FROM environments WHERE name = ?1",
                    [env],
                    |r| r.get(0),
                )
                .optional()?;
            // A backup of an environment whose restore failed keeps that status visible.
            if status.as_deref() != Some("update-failed") {
                set_env_status(&tx, env, "backing-up", last_error.as_deref())?;
            }
        }
        tx.commit()?;
        Ok(true)
    }

    /// Ends a job that made no backup; records the activity entry with it.
    pub fn finish_job(
        &self,
        id: i64,
        state: JobState,
        error: Option<&str>,
        activity: Option<&ActivityEntry>,
    ) -> Result<(), CatalogError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        end_job(&tx, id, state, error)?;
        if let Some(entry) = activity {
            insert_activity(&tx, entry)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A restore's end in one transaction: its environment's new status and error,
    /// its activity entries (the restore's, and its rollback's), and the job's state.
    /// A crash leaves the restore running (a restart repairs it) or wholly recorded.
    pub fn finish_restore(
        &self,
        id: i64,
        (env, status, last_error): (&str, &str, Option<&str>),
        (state, error): (JobState, Option<&str>),
        activity: &[ActivityEntry],
    ) -> Result<(), CatalogError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        set_env_status(&tx, env, status, last_error)?;
        for entry in activity {
            insert_activity(&tx, entry)?;
        }
        end_job(&tx, id, state, error)?;
        tx.commit()?;
        Ok(())
    }

    /// Cancels a job that has not started, with its reserved backup name; false if it
    /// is no longer queued (the runner took it meanwhile).
    pub fn cancel_queued(&self, id: i64, activity: &ActivityEntry) -> Result<bool, CatalogError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let cancelled: Option<(String, Option<String>, Option<String>)> = tx
            .query_row(
                "UPDATE jobs SET state = 'cancelled', error = 'cancelled while queued', finished = ?2
                 WHERE id = ?1 AND state = 'queued' RETURNING kind, env, backup",
                params![id, time_text(Utc::now())],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((kind, env, backup)) = cancelled else {
            return Ok(false);
        };
        if let (true, Some(env), Some(backup)) = (
            kind == JobKind::Backup.as_str(),
            env.as_deref(),
            backup.as_deref(),
        ) {
            remove_backup(&tx, env, backup)?;
        }
        insert_activity(&tx, activity)?;
        tx.commit()?;
        Ok(true)
    }

    /// A backup job succeeded: the backup is completed and listed, all at once.
    pub fn finish_backup(
        &self,
        job: i64,
        done: &CompletedBackup<'_>,
        activity: &ActivityEntry,
    ) -> Result<(), CatalogError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        complete_backup(&tx, done)?;
        end_job(&tx, job, JobState::Succeeded, None)?;
        restore_env_after_backup(&tx, done.env)?;
        insert_activity(&tx, activity)?;
        tx.commit()?;
        Ok(())
    }

    /// A backup job failed or was cancelled: the backup disappears from the list.
    pub fn fail_backup(
        &self,
        job: i64,
        env: &str,
        name: &str,
        state: JobState,
        error: &str,
        activity: &ActivityEntry,
    ) -> Result<(), CatalogError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        remove_backup(&tx, env, name)?;
        end_job(&tx, job, state, Some(error))?;
        restore_env_after_backup(&tx, env)?;
        insert_activity(&tx, activity)?;
        tx.commit()?;
        Ok(())
    }

    pub fn job_counts(&self) -> Result<JobCounts, CatalogError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT coalesce(sum(state = 'queued'), 0), coalesce(sum(state = 'running'), 0) FROM jobs
             WHERE state IN ('queued', 'running')",
        )?;
        Ok(stmt.query_row([], |r| {
            Ok(JobCounts {
                queued: r.get::<_, i64>(0)? as u64,
                running: r.get::<_, i64>(1)? as u64,
            })
        })?)
    }
}

pub(super) fn end_job(
    tx: &rusqlite::Connection,
    id: i64,
    state: JobState,
    error: Option<&str>,
) -> Result<(), CatalogError> {
    // Kept as one printable line: errors quote hostile input (entry names, stderr).
    let error = error.map(crate::message::one_line);
    tx.execute(
        "UPDATE jobs SET state = ?2, error = ?3, finished = ?4 WHERE id = ?1",
        params![id, state, error, time_text(Utc::now())],
    )?;
    Ok(())
}

/// A backup leaves the environment as it found it (`ready`, or `update-failed`).
fn restore_env_after_backup(tx: &rusqlite::Connection, env: &str) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE environments SET status = 'ready' WHERE name = ?1 AND status = 'backing-up'",
        [env],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::BackupName;

    /// A job of a kind a newer envsnap queued, as it lies in the catalog.
    fn insert_foreign_job(catalog: &Catalog, state: &str) -> i64 {
        let conn = catalog.lock();
        conn.execute(
            "INSERT INTO jobs (kind, env, state, user, created) VALUES ('teleport', 'live', ?1, 'root', ?2)",
            params![state, time_text(Utc::now())],
        )
        .unwrap();
        conn.last_insert_rowid()
    }

    #[test]
    fn a_job_kind_from_a_newer_envsnap_fails_alone() {
        let catalog = Catalog::in_memory().unwrap();
        let foreign = insert_foreign_job(&catalog, "queued");
        let ours = catalog
            .queue_backup(
                "live",
                BackupName::Exact("b1"),
                "host",
                "manual",
                "root",
                None,
            )
            .unwrap();
        // The queue goes on: ours is runnable, the foreign one failed saying why.
        let runnable = catalog.runnable_jobs(4).unwrap();
        assert_eq!(runnable.iter().map(|j| j.id).collect::<Vec<_>>(), [ours.id]);
        let (state, error): (String, Option<String>) = catalog
            .lock()
            .query_row(
                "SELECT state, error FROM jobs WHERE id = ?1",
                [foreign],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(state, "failed");
        assert_eq!(error.as_deref(), Some("unknown job kind \"teleport\""));
        assert_eq!(catalog.list_jobs(10).unwrap().len(), 1, "not listed");
        // A restart with one left running still starts.
        let running = insert_foreign_job(&catalog, "running");
        assert!(catalog.recover_interrupted(false).unwrap().is_empty());
        let state: String = catalog
            .lock()
            .query_row("SELECT state FROM jobs WHERE id = ?1", [running], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(state, "failed");
    }

    #[test]
    fn an_import_leaves_its_environments_status_alone() {
        let catalog = Catalog::in_memory().unwrap();
        let job = catalog
            .queue_backup(
                "live",
                BackupName::Exact("outside"),
                "host",
                "import",
                "root",
                None,
            )
            .unwrap();
        assert_eq!(job.kind, JobKind::Import);
        assert!(catalog.start_job(job.id).unwrap());
        assert_eq!(catalog.env_state("live").unwrap().status, "ready");
    }

    #[test]
    fn a_job_error_quoting_hostile_input_is_kept_as_one_line() {
        let catalog = Catalog::in_memory().unwrap();
        let job = catalog
            .queue_backup(
                "live",
                BackupName::Exact("b1"),
                "host",
                "manual",
                "root",
                None,
            )
            .unwrap();
        let error = "entry evil\nFAKE: ok\u{1b}[2J\n";
        catalog
            .fail_backup(
                job.id,
                "live",
                "b1",
                JobState::Failed,
                error,
                &ActivityEntry::now(
                    "root",
                    Some("live"),
                    "backup",
                    Some("b1"),
                    "failed",
                    Some(error.into()),
                ),
            )
            .unwrap();
        let stored = catalog.get_job(job.id).unwrap().unwrap();
        assert_eq!(
            stored.error.as_deref(),
            Some("entry evil FAKE: ok\\u{1b}[2J")
        );
        let logged = catalog.list_activity(Some("live"), None, 10).unwrap();
        assert_eq!(logged[0].detail, stored.error);
    }
}
