//! The scheduler loop: due backups and drills queued as jobs, until shutdown.
//!
//! Each step asks [`crate::schedule::due`] about every (environment, expression) of
//! backup and drill schedules (a drill's runs are recorded under their own key) with
//! its last run from the catalog and the time from the clock, queues what is due in
//! the same transaction that records the run (so a restart neither loses nor doubles
//! one), and sleeps until the earliest next run, at most [`MAX_SLEEP`] so a changed
//! clock is noticed soon. A reload wakes it at once. A failed step is logged and
//! retried after [`MAX_SLEEP`]; nothing it did half is left behind, since every change
//! is one catalog transaction.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::drill::DrillArgs;
use super::runner::Runner;
use crate::catalog::{Catalog, CatalogError, QueueError, drill_schedule_key};
use crate::clock::Clock;
use crate::config::LiveConfig;
use crate::context::Context;
use crate::schedule::{CronError, Due, due, next_run, parse};

/// The longest the loop sleeps, so a changed clock or config is noticed soon.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// What the scheduler works with.
#[derive(Clone)]
pub struct Scheduler {
    pub config: LiveConfig,
    pub catalog: Catalog,
    pub runner: Arc<Runner>,
    pub clock: Clock,
    /// Notified when the config (and so the schedules) changed.
    pub changed: Arc<Notify>,
}

/// What a schedule queues.
#[derive(Debug, Clone, Copy)]
enum Runs {
    Backup,
    Drill,
}

/// Why a scheduler step failed.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("environment {env}: schedule `{expr}`: {source}")]
    Cron {
        env: String,
        expr: String,
        source: CronError,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Queues due backups until `shutdown`.
pub async fn run(scheduler: Scheduler, shutdown: CancellationToken) {
    loop {
        let sleep = match scheduler.tick().await {
            Ok(next) => next.map_or(MAX_SLEEP, |t| {
                (t - scheduler.clock.now())
                    .to_std()
                    .unwrap_or_default()
                    .min(MAX_SLEEP)
            }),
            Err(e) => {
                tracing::error!(error = %e, "scheduler");
                MAX_SLEEP
            }
        };
        tokio::select! {
            () = tokio::time::sleep(sleep + Duration::from_millis(20)) => {}
            () = scheduler.changed.notified() => {}
            () = shutdown.cancelled() => return,
        }
    }
}

impl Scheduler {
    pub fn of(ctx: &Context) -> Self {
        Scheduler {
            config: ctx.config.clone(),
            catalog: ctx.catalog.clone(),
            runner: ctx.runner.clone(),
            clock: ctx.clock.clone(),
            changed: ctx.schedule_changed.clone(),
        }
    }

    /// Queues what is due now; returns the earliest next run of any schedule.
    pub async fn tick(&self) -> Result<Option<DateTime<Utc>>, ScheduleError> {
        let now = self.clock.now();
        let config = self.config.get();
        let mut earliest: Option<DateTime<Utc>> = None;
        for (env, env_config) in &config.environments {
            let backups = env_config.schedule.iter().map(|e| (Runs::Backup, e));
            let drills = env_config.drill.schedule.iter().map(|e| (Runs::Drill, e));
            for (runs, expr) in backups.chain(drills) {
                if let Some(next) = self.step(env, runs, expr, now).await? {
                    earliest = Some(earliest.map_or(next, |e| e.min(next)));
                }
            }
        }
        Ok(earliest)
    }

    /// Queues what one schedule has due now; returns its next run.
    async fn step(
        &self,
        env: &str,
        runs: Runs,
        expr: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, ScheduleError> {
        let config = self.config.get();
        let tz = config.daemon.timezone;
        let cron = parse(expr).map_err(|source| ScheduleError::Cron {
            env: env.to_owned(),
            expr: expr.to_owned(),
            source,
        })?;
        let key = match runs {
            Runs::Backup => expr.to_owned(),
            Runs::Drill => drill_schedule_key(expr),
        };
        let (env_c, key_c) = (env.to_owned(), key.clone());
        let last = self
            .catalog
            .blocking(move |c| c.schedule_last_run(&env_c, &key_c, now))
            .await?;
        match (due(&cron, tz, last, now, config.daemon.catch_up), runs) {
            (Due::Nothing, _) => {}
            (Due::Run(time), Runs::Backup) => self.queue(env, expr, time).await?,
            (Due::Run(time), Runs::Drill) => self.queue_drill(env, expr, time).await?,
            (Due::Skip(time), _) => {
                tracing::warn!(env, schedule = %key, missed = %time, "missed run not caught up (catch_up = false)");
                self.skip(env, &key, time).await?
            }
        }
        Ok(next_run(&cron, tz, now))
    }

    /// Queues a drill of the newest completed backup, recording the run with it. A
    /// run with nothing to drill, or while a drill of the environment still runs, is
    /// recorded and skipped with a warning (the next run tries again).
    async fn queue_drill(
        &self,
        env: &str,
        expr: &str,
        time: DateTime<Utc>,
    ) -> Result<(), ScheduleError> {
        let env_c = env.to_owned();
        let newest = self
            .catalog
            .blocking(move |c| c.last_backup(&env_c))
            .await?;
        let unexpired = newest.filter(|b| b.expires.is_none_or(|e| e > self.clock.now()));
        let Some((backup, manifest)) = unexpired.and_then(|b| Some((b.name.clone(), b.manifest?)))
        else {
            tracing::warn!(
                env,
                schedule = expr,
                "scheduled drill skipped: no completed backup"
            );
            return self.skip(env, &drill_schedule_key(expr), time).await;
        };
        let args = serde_json::to_string(&DrillArgs {
            source_host: None,
            source_env: env.to_owned(),
            backup: backup.clone(),
            manifest,
            keep: false,
        })
        .expect("arguments serialize");
        let (env_c, expr_c) = (env.to_owned(), expr.to_owned());
        let queued = self
            .catalog
            .blocking(move |c| {
                Ok(c.queue_drill(&env_c, "root", &backup, &args, Some((&expr_c, time))))
            })
            .await?;
        match queued {
            Ok(job) => {
                tracing::info!(env, schedule = expr, job = job.id, "scheduled drill queued");
                self.runner.wake();
                Ok(())
            }
            Err(QueueError::Catalog(e)) => Err(e.into()),
            Err(busy) => {
                tracing::warn!(env, schedule = expr, reason = %busy, "scheduled drill skipped");
                self.skip(env, &drill_schedule_key(expr), time).await
            }
        }
    }

    /// Queues the backup scheduled for `time`, named after it in local time.
    async fn queue(&self, env: &str, expr: &str, time: DateTime<Utc>) -> Result<(), ScheduleError> {
        let config = self.config.get();
        let host = config.daemon.host.clone();
        let base = format!(
            "{}-scheduled",
            time.with_timezone(&config.daemon.timezone)
                .format("%Y%m%d-%H%M%S")
        );
        let (env_c, expr_c) = (env.to_owned(), expr.to_owned());
        let job = self
            .catalog
            .blocking(move |c| c.queue_scheduled_backup(&env_c, &base, &host, &expr_c, time))
            .await?;
        tracing::info!(
            env,
            schedule = expr,
            job = job.id,
            backup = job.backup.as_deref().unwrap_or(""),
            "scheduled backup queued"
        );
        self.runner.wake();
        Ok(())
    }

    /// Records a run as handled without running it (missed with `catch_up = false`,
    /// or a drill with nothing to drill).
    async fn skip(&self, env: &str, key: &str, time: DateTime<Utc>) -> Result<(), ScheduleError> {
        let (env_c, expr_c) = (env.to_owned(), key.to_owned());
        self.catalog
            .blocking(move |c| c.set_schedule_last_run(&env_c, &expr_c, time))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{JobKind, JobState};
    use crate::context::testing::{TestContext, at, demo};

    async fn daily_at_three(catch_up: bool) -> (TestContext, Scheduler) {
        let test = demo(at("2030-01-01T02:59:00Z"), |config| {
            config.daemon.catch_up = catch_up;
            let env = config.environments.get_mut("demo").expect("the demo");
            env.schedule = vec!["0 0 3 * * *".into()];
        })
        .await;
        let scheduler = Scheduler::of(&test.ctx);
        (test, scheduler)
    }

    fn queued(test: &TestContext) -> Vec<String> {
        let jobs = test.ctx.catalog.list_jobs(100).unwrap();
        assert!(jobs.iter().all(|j| j.kind == JobKind::Backup));
        assert!(jobs.iter().all(|j| j.state == JobState::Queued));
        let mut names: Vec<String> = jobs.into_iter().filter_map(|j| j.backup).collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_due_schedule_queues_one_backup_named_for_its_time() {
        let (test, scheduler) = daily_at_three(true).await;
        let next = scheduler.tick().await.unwrap();
        assert_eq!(next, Some(at("2030-01-01T03:00:00Z")));
        assert!(queued(&test).is_empty(), "not due yet");
        test.hand.advance(chrono::Duration::seconds(90));
        scheduler.tick().await.unwrap();
        scheduler.tick().await.unwrap();
        assert_eq!(
            queued(&test),
            ["20300101-030000-scheduled"],
            "once, not twice"
        );
        // Down for three days: one catch-up run, for the latest missed time.
        test.hand.advance(chrono::Duration::days(3));
        scheduler.tick().await.unwrap();
        assert_eq!(
            queued(&test),
            ["20300101-030000-scheduled", "20300104-030000-scheduled"]
        );
    }

    #[tokio::test]
    async fn a_missed_run_is_skipped_without_catch_up() {
        let (test, scheduler) = daily_at_three(false).await;
        scheduler.tick().await.unwrap();
        test.hand.advance(chrono::Duration::days(2));
        let next = scheduler.tick().await.unwrap();
        assert!(queued(&test).is_empty(), "missed, not caught up");
        assert_eq!(next, Some(at("2030-01-03T03:00:00Z")));
        test.hand.set(at("2030-01-03T03:00:30Z"));
        scheduler.tick().await.unwrap();
        assert_eq!(
            queued(&test),
            ["20300103-030000-scheduled"],
            "on time again"
        );
    }

    #[tokio::test]
    async fn the_loop_runs_without_a_daemon_and_stops_on_shutdown() {
        let (test, scheduler) = daily_at_three(true).await;
        // First seen at 02:59 (a schedule never fires for times before it existed).
        scheduler.tick().await.unwrap();
        let (changed, shutdown) = (scheduler.changed.clone(), CancellationToken::new());
        let looping = tokio::spawn(run(scheduler, shutdown.clone()));
        // A reload (here: only the clock moved) wakes the loop, which queues the run.
        test.hand.advance(chrono::Duration::minutes(2));
        changed.notify_one();
        for _ in 0..200 {
            if !queued(&test).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(queued(&test), ["20300101-030000-scheduled"]);
        shutdown.cancel();
        looping.await.unwrap();
    }
}
