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

impl Catalog {
    /// Queues a backup job and reserves its backup name, in one transaction. A backup
    /// with trigger `import` is an `import` job (its data comes from the client).
    pub fn queue_backup(
        &self,
        env: &str,
        name: &str,
        host: &str,
        trigger: &str,
        user: &str,
        args: Option<&str>,
    ) -> Result<JobRecord, QueueError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let taken = tx
            .prepare_cached("SELECT 1 FROM backups WHERE env = ?1 AND name = ?2")?
            .exists(params![env, name])?;
        if taken {
            return Err(QueueError::Duplicate {
                env: env.to_owned(),
                name: name.to_owned(),
            });
        }
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
        let mut name = base_name.to_owned();
        let mut attempt = 1;
        while tx
            .prepare_cached("SELECT 1 FROM backups WHERE env = ?1 AND name = ?2")?
            .exists(params![env, name])?
        {
            attempt += 1;
            name = format!("{base_name}-{attempt}");
        }
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
        tx.execute(
            "INSERT INTO schedule_runs (env, schedule, last_run) VALUES (?1, ?2, ?3)
             ON CONFLICT (env, schedule) DO UPDATE SET last_run = excluded.last_run",
            params![env, schedule, time_text(time)],
        )?;
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
}
