//! Schedules: cron expressions → due backups (the pure part).
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
//! Everything here is pure: [`parse`], [`next_run`] and [`due`] take the time as an
//! argument and touch nothing, so config validation uses them and tests walk them
//! through daylight-saving changes. The loop that feeds them the clock and queues
//! the backups is `jobs::scheduler`.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// A run whose time passed less than this long ago is on time, not missed.
const ON_TIME: chrono::Duration = chrono::Duration::seconds(90);

/// A cron expression croner cannot read; the message is croner's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

/// Parses a 6-field (seconds first) expression, as the config normalizes them.
pub fn parse(expr: &str) -> Result<Cron, CronError> {
    CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(false)
        .build()
        .parse(expr)
        .map_err(|e| CronError(e.to_string()))
}

/// The first run strictly after `after`.
pub fn next_run(cron: &Cron, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after.with_timezone(&tz), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The earliest next run of a list of expressions (an environment's schedule).
pub fn next_of(schedule: &[String], tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule
        .iter()
        .filter_map(|expr| parse(expr).ok())
        .filter_map(|cron| next_run(&cron, tz, now))
        .min()
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
