//! Schedules: cron expressions → due backups.
//!
//! What is due is derived from persisted state, never from an in-memory timer alone:
//! each (environment, expression) has a last-run time in the catalog, written in the
//! same transaction that queues the backup, so a restart neither loses nor doubles a
//! run. A run missed while the daemon was down is caught up once at start-up when
//! `daemon.catch_up` is on, and skipped otherwise.
//!
//! Times are computed by `croner` (the parser tokio-cron-scheduler uses) from the
//! wall-clock time in `daemon.timezone` at every step. tokio-cron-scheduler itself
//! computes later ticks from the UTC offset captured when a job is created, which
//! drifts by an hour across a daylight-saving change; deriving each next time afresh
//! from local time avoids that. Cron follows classic semantics: when both
//! day-of-month and day-of-week are restricted, either matching day runs.
//!
//! [`due`] and [`next_run`] are pure and take the time as an argument; the loop in
//! [`run`] feeds them the clock.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use crate::daemon::Daemon;

/// The longest the loop sleeps, so a changed clock or config is noticed soon.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// A run whose time passed less than this long ago is on time, not missed.
const ON_TIME: chrono::Duration = chrono::Duration::seconds(90);

/// Parses a 6-field (seconds first) expression, as the config normalizes them.
pub fn parse(expr: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(false)
        .build()
        .parse(expr)
        .map_err(|e| e.to_string())
}

/// The first run strictly after `after`.
pub fn next_run(cron: &Cron, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after.with_timezone(&tz), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// What a schedule should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing to do.
    Nothing,
    /// Run the backup scheduled for this time (on time, or caught up).
    Run(DateTime<Utc>),
    /// A run was missed and is not caught up: record it as handled.
    Skip(DateTime<Utc>),
}

/// Decides for one schedule, given when it last ran (or was first seen).
pub fn due(
    cron: &Cron,
    tz: Tz,
    last_run: DateTime<Utc>,
    now: DateTime<Utc>,
    catch_up: bool,
) -> Due {
    // The latest scheduled time in (last_run, now]: walk forward from last_run.
    let mut latest = None;
    let mut cursor = last_run;
    while let Some(next) = next_run(cron, tz, cursor) {
        if next > now {
            break;
        }
        latest = Some(next);
        cursor = next;
    }
    match latest {
        None => Due::Nothing,
        Some(time) if catch_up || now - time < ON_TIME => Due::Run(time),
        Some(time) => Due::Skip(time),
    }
}

/// The scheduler loop: queues due backups until shutdown.
pub async fn run(daemon: Arc<Daemon>) {
    loop {
        let sleep = match tick(&daemon, Utc::now()).await {
            Ok(next) => next.map_or(MAX_SLEEP, |t| {
                (t - Utc::now()).to_std().unwrap_or_default().min(MAX_SLEEP)
            }),
            Err(e) => {
                tracing::error!(error = %e, "scheduler");
                MAX_SLEEP
            }
        };
        tokio::select! {
            () = tokio::time::sleep(sleep + Duration::from_millis(20)) => {}
            () = daemon.schedule_changed.notified() => {}
            () = daemon.shutdown.cancelled() => return,
        }
    }
}

/// Queues what is due at `now`; returns the earliest next run of any schedule.
async fn tick(daemon: &Arc<Daemon>, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, String> {
    let config = daemon.config();
    let tz = config.daemon.timezone;
    let mut earliest: Option<DateTime<Utc>> = None;
    for (env, env_config) in &config.environments {
        for expr in &env_config.schedule {
            let cron =
                parse(expr).map_err(|e| format!("environment {env}: schedule `{expr}`: {e}"))?;
            let (env_c, expr_c) = (env.clone(), expr.clone());
            let last = daemon
                .catalog
                .blocking(move |c| c.schedule_last_run(&env_c, &expr_c, now))
                .await
                .map_err(|e| e.to_string())?;
            match due(&cron, tz, last, now, config.daemon.catch_up) {
                Due::Nothing => {}
                Due::Run(time) => queue_scheduled(daemon, env, expr, time).await?,
                Due::Skip(time) => {
                    tracing::warn!(env = %env, schedule = %expr, missed = %time, "missed run not caught up (catch_up = false)");
                    let (env_c, expr_c) = (env.clone(), expr.clone());
                    daemon
                        .catalog
                        .blocking(move |c| c.set_schedule_last_run(&env_c, &expr_c, time))
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            if let Some(next) = next_run(&cron, tz, now) {
                earliest = Some(earliest.map_or(next, |e| e.min(next)));
            }
        }
    }
    Ok(earliest)
}

async fn queue_scheduled(
    daemon: &Arc<Daemon>,
    env: &str,
    expr: &str,
    time: DateTime<Utc>,
) -> Result<(), String> {
    let host = daemon.config().daemon.host.clone();
    let base = format!(
        "{}-scheduled",
        time.with_timezone(&daemon.config().daemon.timezone)
            .format("%Y%m%d-%H%M%S")
    );
    let (env_c, expr_c) = (env.to_owned(), expr.to_owned());
    let job = daemon
        .catalog
        .blocking(move |c| c.queue_scheduled_backup(&env_c, &base, &host, &expr_c, time))
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(
        env,
        schedule = expr,
        job = job.id,
        backup = job.backup.as_deref().unwrap_or(""),
        "scheduled backup queued"
    );
    daemon.runner.wake();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn berlin(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        chrono_tz::Europe::Berlin
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_daily_schedule_keeps_local_time_across_daylight_saving_changes() {
        let cron = parse("0 0 3 * * *").unwrap();
        let tz = chrono_tz::Europe::Berlin;
        // Spring forward on 2026-03-29 (02:00 → 03:00), fall back on 2026-10-25.
        for (y, m, d) in [(2026, 3, 27), (2026, 10, 23)] {
            let mut t = berlin(y, m, d, 12, 0);
            for _ in 0..4 {
                let next = next_run(&cron, tz, t).unwrap();
                let local = next.with_timezone(&tz);
                assert_eq!((local.format("%H:%M").to_string()), "03:00", "{next}");
                assert!(next - t <= chrono::Duration::hours(25) && next > t);
                t = next;
            }
        }
    }

    #[test]
    fn due_runs_once_and_catches_up_only_when_asked() {
        let cron = parse("0 0 3 * * *").unwrap();
        let tz = chrono_tz::UTC;
        let at = |d: u32, h: u32| Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap();
        assert_eq!(due(&cron, tz, at(1, 4), at(1, 12), true), Due::Nothing);
        assert_eq!(
            due(&cron, tz, at(1, 4), at(2, 3), false),
            Due::Run(at(2, 3)),
            "on time"
        );
        // Down for three days: one run, for the latest missed time.
        assert_eq!(
            due(&cron, tz, at(1, 4), at(4, 12), true),
            Due::Run(at(4, 3))
        );
        assert_eq!(
            due(&cron, tz, at(1, 4), at(4, 12), false),
            Due::Skip(at(4, 3))
        );
        // After running it, nothing more until the next day.
        assert_eq!(due(&cron, tz, at(4, 3), at(4, 12), true), Due::Nothing);
    }

    #[test]
    fn classic_cron_days_are_either_or() {
        // The 1st of the month OR any Monday.
        let cron = parse("0 0 0 1 * MON").unwrap();
        let after = Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).unwrap(); // a Tuesday
        let next = next_run(&cron, chrono_tz::UTC, after).unwrap();
        assert_eq!(
            next,
            Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap(),
            "Monday the 30th"
        );
    }
}
