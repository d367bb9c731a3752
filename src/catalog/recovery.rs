//! Interrupted restores in the catalog: what a restore records as it changes an
//! environment, and what a restart makes of it.
//!
//! A restore marks its environment `changing` just before it stops the app; the
//! column is cleared when the restore ends (any status other than `updating`). A
//! restart that finds an environment still `updating` therefore knows whether the
//! restore had touched it. An untouched one is as it was. A touched one is either
//! left for a person (`restore.on_interrupt = "leave"`), or stays `changing` with
//! `update-failed` status: a rollback to its safety backup is pending, and
//! [`Catalog::pending_rollbacks`] lists it until a restore of that backup ends, even
//! across further restarts.

use chrono::Utc;
use rusqlite::{OptionalExtension, params};

use super::activity::insert_activity;
use super::backups::remove_backup;
use super::chunks::owe_sweep;
use super::db::Catalog;
use super::error::CatalogError;
use super::jobs::{JOB_COLUMNS, JobRow, end_job, into_job, read_job};
use super::records::{ActivityEntry, JobKind, JobRecord, JobState};

/// An environment a killed restore left half replaced, waiting to be rolled back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRollback {
    pub env: String,
    pub safety_backup: String,
    /// Restores of the safety backup by `user` so far (earlier rollbacks that were
    /// themselves interrupted).
    pub attempts: u32,
}

impl Catalog {
    /// After a crash or restart: jobs left running failed, their half backups gone
    /// (and a sweep owed for what their writes left in the store), environments
    /// left `backing-up` back to `ready`, interrupted restores settled
    /// (see [`settle_interrupted_restores`]; with `rollback`, one that changed its
    /// environment is left pending for [`Catalog::pending_rollbacks`]). Returns the
    /// jobs failed.
    pub fn recover_interrupted(&self, rollback: bool) -> Result<Vec<JobRecord>, CatalogError> {
        let interrupted: Vec<JobRow> = {
            let conn = self.lock();
            conn.prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running'"
            ))?
            .query_map([], read_job)?
            .collect::<Result<Vec<_>, _>>()?
        };
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let reason = "interrupted: the daemon stopped while the job ran";
        let (known, unknown): (Vec<JobRow>, Vec<JobRow>) =
            interrupted.into_iter().partition(JobRow::is_known);
        for row in &unknown {
            end_job(&tx, row.id, JobState::Failed, Some(reason))?;
        }
        let interrupted: Vec<JobRecord> =
            known.into_iter().map(into_job).collect::<Result<_, _>>()?;
        if !unknown.is_empty() || !interrupted.is_empty() {
            // A write killed between its index object and its manifest leaves
            // indexed data that no backup references: only a mark finds it.
            owe_sweep(&tx)?;
        }
        for job in &interrupted {
            let untouched =
                "interrupted before anything changed: the daemon stopped during the safety backup";
            let reason =
                match job.kind == JobKind::Restore && !is_changing(&tx, job.env.as_deref())? {
                    true => untouched,
                    false => reason,
                };
            end_job(&tx, job.id, JobState::Failed, Some(reason))?;
            if let (Some(env), JobKind::Drill) = (job.env.as_deref(), job.kind) {
                insert_activity(
                    &tx,
                    &ActivityEntry::now(
                        &job.user,
                        Some(env),
                        "drill",
                        job.backup.as_deref(),
                        "failed",
                        Some(reason.into()),
                    ),
                )?;
            }
            if let (Some(env), Some(backup), true) = (
                job.env.as_deref(),
                job.backup.as_deref(),
                job.kind.makes_backup(),
            ) {
                let half: Option<String> = tx
                    .query_row(
                        "SELECT status FROM backups WHERE env = ?1 AND name = ?2",
                        params![env, backup],
                        |r| r.get(0),
                    )
                    .optional()?;
                if half.as_deref() == Some("creating") {
                    remove_backup(&tx, env, backup)?;
                }
                insert_activity(
                    &tx,
                    &ActivityEntry {
                        time: Utc::now(),
                        user: job.user.clone(),
                        env: Some(env.to_owned()),
                        action: job.kind.to_string(),
                        backup: Some(backup.to_owned()),
                        outcome: "failed".into(),
                        detail: Some(reason.into()),
                    },
                )?;
            }
        }
        tx.execute(
            "UPDATE environments SET status = 'ready' WHERE status = 'backing-up'",
            [],
        )?;
        settle_interrupted_restores(&tx, rollback)?;
        tx.commit()?;
        Ok(interrupted)
    }

    /// A restore is about to change its environment (stop the app): a restart from
    /// here on finds the environment to repair.
    pub fn mark_restore_changing(&self, env: &str) -> Result<(), CatalogError> {
        let conn = self.lock();
        conn.execute(
            "UPDATE environments SET changing = 1 WHERE name = ?1",
            [env],
        )?;
        Ok(())
    }

    /// Environments with a rollback pending, and how often one was tried by `user`.
    pub fn pending_rollbacks(&self, user: &str) -> Result<Vec<PendingRollback>, CatalogError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT e.name, e.safety_backup,
                 (SELECT count(*) FROM jobs j WHERE j.env = e.name AND j.kind = 'restore'
                      AND j.backup = e.safety_backup AND j.user = ?1)
             FROM environments e
             WHERE e.changing = 1 AND e.status = 'update-failed' AND e.safety_backup IS NOT NULL
             ORDER BY e.name",
        )?;
        let pending = stmt
            .query_map([user], |r| {
                Ok(PendingRollback {
                    env: r.get(0)?,
                    safety_backup: r.get(1)?,
                    attempts: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(pending)
    }

    /// No rollback of `env` will be tried (`why`): it is left `update-failed` for a
    /// person, with the command that rolls back.
    pub fn give_up_rollback(&self, env: &str, why: &str) -> Result<(), CatalogError> {
        let conn = self.lock();
        conn.execute(
            "UPDATE environments SET changing = 0,
                 last_error = ?2 || '; roll back with: envsnapctl restore ' || name || ' ' || safety_backup || ' --yes'
             WHERE name = ?1 AND changing = 1",
            params![env, crate::message::one_line(why)],
        )?;
        Ok(())
    }
}

/// Whether a restore of `env` had begun changing it.
fn is_changing(tx: &rusqlite::Connection, env: Option<&str>) -> Result<bool, CatalogError> {
    let Some(env) = env else {
        return Ok(false);
    };
    let changing: Option<i64> = tx
        .query_row(
            "SELECT changing FROM environments WHERE name = ?1 AND status = 'updating'",
            [env],
            |r| r.get(0),
        )
        .optional()?;
    Ok(changing.unwrap_or(0) != 0)
}

/// Environments a restart found `updating`: one whose restore changed nothing yet
/// is as it was (`ready`, or `update-failed` with its standing error); one half
/// replaced is `update-failed`. With `rollback` and a safety backup it stays marked
/// `changing`, a rollback pending; otherwise its error gives the command that gets
/// the state before it back, working as printed.
fn settle_interrupted_restores(
    tx: &rusqlite::Connection,
    rollback: bool,
) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE environments SET status = CASE WHEN last_error IS NULL THEN 'ready' ELSE 'update-failed' END
         WHERE status = 'updating' AND changing = 0",
        [],
    )?;
    if rollback {
        tx.execute(
            "UPDATE environments SET status = 'update-failed',
                 last_error = 'restore interrupted by a daemon restart; rolling back to ' || safety_backup
             WHERE status = 'updating' AND safety_backup IS NOT NULL",
            [],
        )?;
    }
    tx.execute(
        "UPDATE environments SET status = 'update-failed', changing = 0, last_error = 'restore interrupted by a daemon restart; '
             || CASE WHEN safety_backup IS NULL THEN 'no safety backup was made'
                ELSE 'roll back with: envsnapctl restore ' || name || ' ' || safety_backup || ' --yes' END
         WHERE status = 'updating'",
        [],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_job_owes_the_store_a_sweep() {
        let catalog = Catalog::in_memory().unwrap();
        catalog.sweep_done().unwrap();
        catalog.recover_interrupted(false).unwrap();
        assert!(!catalog.sweep_owed().unwrap(), "nothing was interrupted");
        let name = crate::catalog::BackupName::Exact("b1");
        let job = catalog
            .queue_backup("live", name, "host", "manual", "root", None)
            .unwrap();
        assert!(catalog.start_job(job.id).unwrap());
        catalog.recover_interrupted(false).unwrap();
        assert!(catalog.sweep_owed().unwrap());
    }

    #[test]
    fn an_interrupted_restore_is_repaired_only_if_it_changed_something() {
        let catalog = Catalog::in_memory().unwrap();
        let restore = |env: &str| {
            let job = catalog
                .queue_restore(JobKind::Restore, env, "root", "b1", "{}")
                .unwrap();
            assert!(catalog.start_job(job.id).unwrap());
            job.id
        };
        let untouched = restore("live");
        let changed = restore("test");
        catalog.set_safety_backup("test", "b0-pre-restore").unwrap();
        catalog.mark_restore_changing("test").unwrap();
        catalog.recover_interrupted(false).unwrap();
        let live = catalog.env_state("live").unwrap();
        assert_eq!((live.status.as_str(), live.last_error), ("ready", None));
        let job = catalog.get_job(untouched).unwrap().unwrap();
        assert_eq!(
            job.error.as_deref(),
            Some(
                "interrupted before anything changed: the daemon stopped during the safety backup"
            )
        );
        let test = catalog.env_state("test").unwrap();
        assert_eq!(test.status, "update-failed");
        assert_eq!(
            test.last_error.as_deref(),
            Some(
                "restore interrupted by a daemon restart; roll back with: envsnapctl restore test b0-pre-restore --yes"
            )
        );
        let job = catalog.get_job(changed).unwrap().unwrap();
        assert_eq!(
            job.error.as_deref(),
            Some("interrupted: the daemon stopped while the job ran")
        );
    }

    /// A catalog after a restart that interrupted a restore of `live` (safety backup
    /// `b0-pre-restore`) once it had changed the environment, rollbacks on.
    fn restarted_mid_restore() -> Catalog {
        let catalog = Catalog::in_memory().unwrap();
        let job = catalog
            .queue_restore(JobKind::Restore, "live", "root", "b1", "{}")
            .unwrap();
        assert!(catalog.start_job(job.id).unwrap());
        catalog.set_safety_backup("live", "b0-pre-restore").unwrap();
        catalog.mark_restore_changing("live").unwrap();
        catalog.recover_interrupted(true).unwrap();
        catalog
    }

    #[test]
    fn a_rollback_stays_pending_until_a_restore_of_the_safety_backup_ends() {
        let catalog = restarted_mid_restore();
        let pending = PendingRollback {
            env: "live".into(),
            safety_backup: "b0-pre-restore".into(),
            attempts: 0,
        };
        assert_eq!(
            catalog.pending_rollbacks("envsnapd").unwrap(),
            std::slice::from_ref(&pending)
        );
        let live = catalog.env_state("live").unwrap();
        assert_eq!(live.status, "update-failed");
        assert_eq!(
            live.last_error.as_deref(),
            Some("restore interrupted by a daemon restart; rolling back to b0-pre-restore")
        );
        // The rollback itself is killed before it marks anything: still pending.
        let rollback = catalog
            .queue_restore(JobKind::Restore, "live", "envsnapd", "b0-pre-restore", "{}")
            .unwrap();
        assert!(catalog.start_job(rollback.id).unwrap());
        catalog.recover_interrupted(true).unwrap();
        let again = PendingRollback {
            attempts: 1,
            ..pending
        };
        assert_eq!(catalog.pending_rollbacks("envsnapd").unwrap(), [again]);
        // Its end, whatever the outcome, settles the environment.
        let rollback = catalog
            .queue_restore(JobKind::Restore, "live", "envsnapd", "b0-pre-restore", "{}")
            .unwrap();
        assert!(catalog.start_job(rollback.id).unwrap());
        catalog.set_env_status("live", "ready", None).unwrap();
        assert!(catalog.pending_rollbacks("envsnapd").unwrap().is_empty());
    }

    #[test]
    fn a_rollback_given_up_names_the_command() {
        let catalog = restarted_mid_restore();
        catalog
            .give_up_rollback("live", "three rollbacks were interrupted")
            .unwrap();
        assert!(catalog.pending_rollbacks("envsnapd").unwrap().is_empty());
        assert_eq!(
            catalog.env_state("live").unwrap().last_error.as_deref(),
            Some(
                "three rollbacks were interrupted; roll back with: envsnapctl restore live b0-pre-restore --yes"
            )
        );
    }
}
