//! Queuing jobs: each job is queued in one transaction with what it reserves (a
//! backup's name, a scheduled run), after the checks that can refuse it (a taken
//! name, a restore or import already waiting or running in the environment).

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::backups::{NewBackup, insert_creating_backup};
use super::db::Catalog;
use super::error::CatalogError;
use super::records::{JobKind, JobRecord, JobState, time_text};

/// Why a backup could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("a backup named {name:?} already exists in environment {env}")]
    Duplicate { env: String, name: String },
    #[error("environment {env} already has a {kind} job {job} {state}; wait for it or cancel it")]
    Busy {
        env: String,
        kind: JobKind,
        job: i64,
        state: JobState,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl From<rusqlite::Error> for QueueError {
    fn from(e: rusqlite::Error) -> Self {
        QueueError::Catalog(e.into())
    }
}

/// The name a queued backup reserves.
#[derive(Debug, Clone, Copy)]
pub enum BackupName<'a> {
    /// Asked for: refused when taken.
    Exact(&'a str),
    /// Generated (from a time): a taken one gets a suffix, `-2`, `-3`, ..., so two
    /// backups in one second both get one.
    Generated(&'a str),
}

impl Catalog {
    /// Queues a backup job and reserves its backup name, in one transaction. A backup
    /// with trigger `import` is an `import` job (its data comes from the client).
    pub fn queue_backup(
        &self,
        env: &str,
        name: BackupName<'_>,
        host: &str,
        trigger: &str,
        user: &str,
        args: Option<&str>,
    ) -> Result<JobRecord, QueueError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let name = &match name {
            BackupName::Exact(name) if is_taken(&tx, env, name)? => {
                return Err(QueueError::Duplicate {
                    env: env.to_owned(),
                    name: name.to_owned(),
                });
            }
            BackupName::Exact(name) => name.to_owned(),
            BackupName::Generated(base) => free_name(&tx, env, base)?,
        };
        let now = Utc::now();
        let kind = if trigger == "import" {
            JobKind::Import
        } else {
            JobKind::Backup
        };
        tx.execute(
            "INSERT INTO jobs (kind, env, state, user, backup, args, created) VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6)",
            params![kind, env, user, name, args, time_text(now)],
        )?;
        let job = tx.last_insert_rowid();
        insert_creating_backup(
            &tx,
            &NewBackup {
                env,
                name,
                host,
                trigger,
                user,
                job,
            },
            now,
        )?;
        tx.commit()?;
        drop(conn);
        Ok(self.get_job(job)?.expect("just inserted"))
    }

    /// Queues a scheduled backup and records the run, in one transaction: a crash
    /// can neither lose the run nor queue it twice.
    pub fn queue_scheduled_backup(
        &self,
        env: &str,
        base_name: &str,
        host: &str,
        schedule: &str,
        time: DateTime<Utc>,
    ) -> Result<JobRecord, CatalogError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let name = free_name(&tx, env, base_name)?;
        let now = Utc::now();
        tx.execute(
            "INSERT INTO jobs (kind, env, state, user, backup, created) VALUES ('backup', ?1, 'queued', 'root', ?2, ?3)",
            params![env, name, time_text(now)],
        )?;
        let job = tx.last_insert_rowid();
        insert_creating_backup(
            &tx,
            &NewBackup {
                env,
                name: &name,
                host,
                trigger: "scheduled",
                user: "root",
                job,
            },
            now,
        )?;
        record_run(&tx, env, schedule, time)?;
        tx.commit()?;
        drop(conn);
        Ok(self.get_job(job)?.expect("just inserted"))
    }

    /// Queues a restore (or import) unless one of the same environment is queued or
    /// running; `args` is the job's JSON arguments.
    pub fn queue_restore(
        &self,
        kind: JobKind,
        env: &str,
        user: &str,
        backup: &str,
        args: &str,
    ) -> Result<JobRecord, QueueError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let busy: Option<(i64, JobKind, JobState)> = tx
            .query_row(
                "SELECT id, kind, state FROM jobs WHERE env = ?1 AND kind IN ('restore', 'import')
                 AND state IN ('queued', 'running') ORDER BY id LIMIT 1",
                [env],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if let Some((job, kind, state)) = busy {
            return Err(QueueError::Busy {
                env: env.to_owned(),
                kind,
                job,
                state,
            });
        }
        tx.execute(
            "INSERT INTO jobs (kind, env, state, user, backup, args, created) VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6)",
            params![kind, env, user, backup, args, time_text(Utc::now())],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        drop(conn);
        Ok(self.get_job(id)?.expect("just inserted"))
    }
    /// Queues a restore drill of `backup` unless one of the environment is queued or
    /// running; with `schedule`, records the scheduled run in the same transaction.
    pub fn queue_drill(
        &self,
        env: &str,
        user: &str,
        backup: &str,
        args: &str,
        schedule: Option<(&str, DateTime<Utc>)>,
    ) -> Result<JobRecord, QueueError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let busy: Option<(i64, JobState)> = tx
            .query_row(
                "SELECT id, state FROM jobs WHERE env = ?1 AND kind = 'drill'
                 AND state IN ('queued', 'running') ORDER BY id LIMIT 1",
                [env],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((job, state)) = busy {
            return Err(QueueError::Busy {
                env: env.to_owned(),
                kind: JobKind::Drill,
                job,
                state,
            });
        }
        // A drill's id names its report in the store: after a new catalog rebuilt
        // the old drills, new ids must not restart below theirs.
        let id: i64 = tx.query_row(
            "SELECT max(coalesce((SELECT max(id) FROM jobs), 0), coalesce((SELECT max(id) FROM drills), 0)) + 1",
            [],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO jobs (id, kind, env, state, user, backup, args, created) VALUES (?1, 'drill', ?2, 'queued', ?3, ?4, ?5, ?6)",
            params![id, env, user, backup, args, time_text(Utc::now())],
        )?;
        if let Some((expr, time)) = schedule {
            record_run(&tx, env, &drill_schedule_key(expr), time)?;
        }
        tx.commit()?;
        drop(conn);
        Ok(self.get_job(id)?.expect("just inserted"))
    }
}

/// The key a drill schedule's runs are recorded under: its own, so a backup and a
/// drill with the same cron expression keep separate runs.
pub fn drill_schedule_key(expr: &str) -> String {
    format!("drill: {expr}")
}

pub(super) fn record_run(
    tx: &rusqlite::Connection,
    env: &str,
    schedule: &str,
    time: DateTime<Utc>,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO schedule_runs (env, schedule, last_run) VALUES (?1, ?2, ?3)
         ON CONFLICT (env, schedule) DO UPDATE SET last_run = excluded.last_run",
        params![env, schedule, time_text(time)],
    )?;
    Ok(())
}

fn is_taken(tx: &rusqlite::Connection, env: &str, name: &str) -> rusqlite::Result<bool> {
    tx.prepare_cached("SELECT 1 FROM backups WHERE env = ?1 AND name = ?2")?
        .exists(params![env, name])
}

/// `base`, or the first of `base-2`, `base-3`, ... that no backup of `env` has.
fn free_name(tx: &rusqlite::Connection, env: &str, base: &str) -> rusqlite::Result<String> {
    let mut name = base.to_owned();
    let mut attempt = 1;
    while is_taken(tx, env, &name)? {
        attempt += 1;
        name = format!("{base}-{attempt}");
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_get_a_suffix_and_asked_for_names_are_refused() {
        let catalog = Catalog::in_memory().unwrap();
        let queue = |name| catalog.queue_backup("live", name, "host", "manual", "root", None);
        let first = queue(BackupName::Generated("20300101-000000-manual")).unwrap();
        let second = queue(BackupName::Generated("20300101-000000-manual")).unwrap();
        assert_eq!(first.backup.as_deref(), Some("20300101-000000-manual"));
        assert_eq!(second.backup.as_deref(), Some("20300101-000000-manual-2"));
        let taken = queue(BackupName::Exact("20300101-000000-manual-2")).unwrap_err();
        assert_eq!(
            taken.to_string(),
            "a backup named \"20300101-000000-manual-2\" already exists in environment live"
        );
        let scheduled = catalog
            .queue_scheduled_backup(
                "live",
                "20300101-000000-manual",
                "host",
                "0 0 3 * * *",
                Utc::now(),
            )
            .unwrap();
        assert_eq!(
            scheduled.backup.as_deref(),
            Some("20300101-000000-manual-3")
        );
    }
}
