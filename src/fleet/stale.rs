//! When a host or an environment is stale (pure: the time is an argument).
//!
//! - A host is stale when its heartbeat is older than three of its own intervals
//!   (it writes one every `fleet.heartbeat`, and after every job), or older than
//!   `fleet.stale_after` when that is set. A host that never wrote one is not judged
//!   (it may be starting); its environments are.
//! - An environment is stale when two of its scheduled runs have passed since its
//!   newest completed backup (one missed run may be a run in progress or a brief
//!   outage; two is a pattern), or when that backup is older than
//!   `fleet.stale_after`. Without a backup, the runs are counted from when its daemon
//!   started. An environment with no schedule is judged by `stale_after` alone.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Missed heartbeats after which a host is stale.
const MISSED_HEARTBEATS: u32 = 3;
/// Missed scheduled runs after which an environment is stale.
const MISSED_RUNS: usize = 2;

/// Why the host whose status was `written` with heartbeat `interval` is stale at
/// `now`, or `None`.
pub fn host_stale(
    written: DateTime<Utc>,
    interval: Duration,
    now: DateTime<Utc>,
    stale_after: Option<Duration>,
) -> Option<String> {
    let age = age(written, now);
    if age > interval * MISSED_HEARTBEATS {
        return Some(format!(
            "no heartbeat for {} ({MISSED_HEARTBEATS} missed)",
            human(age)
        ));
    }
    match stale_after {
        Some(limit) if age > limit => Some(format!(
            "no heartbeat for {} (fleet.stale_after {})",
            human(age),
            human(limit)
        )),
        _ => None,
    }
}

/// What an environment's staleness is judged from.
pub struct Backups<'a> {
    /// Normalized cron expressions and the zone they are written in.
    pub schedule: &'a [String],
    pub timezone: chrono_tz::Tz,
    /// The newest completed backup's time.
    pub last: Option<DateTime<Utc>>,
    /// When its daemon started (the count's start without a backup).
    pub since: DateTime<Utc>,
}

/// Why the environment is stale at `now`, or `None`.
pub fn env_stale(
    backups: &Backups<'_>,
    now: DateTime<Utc>,
    stale_after: Option<Duration>,
) -> Option<String> {
    let from = backups.last.unwrap_or(backups.since);
    let missed = missed_runs(backups.schedule, backups.timezone, from, now);
    if missed >= MISSED_RUNS {
        return Some(match backups.last {
            Some(last) => format!(
                "{missed} scheduled runs missed since the last backup {} ago",
                human(age(last, now))
            ),
            None => format!("{missed} scheduled runs missed and no backup"),
        });
    }
    match (stale_after, backups.last) {
        (Some(limit), Some(last)) if age(last, now) > limit => Some(format!(
            "last backup {} ago (fleet.stale_after {})",
            human(age(last, now)),
            human(limit)
        )),
        _ => None,
    }
}

/// Scheduled runs in `(from, now]`, counted up to [`MISSED_RUNS`].
fn missed_runs(
    schedule: &[String],
    timezone: chrono_tz::Tz,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
) -> usize {
    let mut runs = Vec::new();
    for expr in schedule {
        let Ok(cron) = crate::schedule::parse(expr) else {
            continue;
        };
        let mut cursor = from;
        while runs.len() < MISSED_RUNS * schedule.len() {
            match crate::schedule::next_run(&cron, timezone, cursor) {
                Some(next) if next <= now => {
                    runs.push(next);
                    cursor = next;
                }
                _ => break,
            }
        }
    }
    runs.sort();
    runs.dedup();
    runs.len().min(MISSED_RUNS)
}

fn age(time: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - time).to_std().unwrap_or_default()
}

fn human(duration: Duration) -> String {
    crate::message::human_duration(duration.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn a_host_is_stale_after_three_missed_heartbeats_or_stale_after() {
        let written = at("2026-12-03T10:00:00Z");
        let minute = Duration::from_secs(60);
        assert_eq!(
            host_stale(written, 5 * minute, at("2026-12-03T10:14:00Z"), None),
            None
        );
        assert_eq!(
            host_stale(written, 5 * minute, at("2026-12-03T10:16:00Z"), None).as_deref(),
            Some("no heartbeat for 16m 0s (3 missed)")
        );
        assert_eq!(
            host_stale(
                written,
                5 * minute,
                at("2026-12-03T10:11:00Z"),
                Some(10 * minute)
            )
            .as_deref(),
            Some("no heartbeat for 11m 0s (fleet.stale_after 10m 0s)")
        );
    }

    #[test]
    fn an_environment_is_stale_after_two_missed_runs() {
        let daily = ["0 0 3 * * *".to_owned()];
        let backups = |last| Backups {
            schedule: &daily,
            timezone: chrono_tz::Tz::UTC,
            last,
            since: at("2026-11-01T00:00:00Z"),
        };
        let last = Some(at("2026-12-01T03:00:05Z"));
        // One run missed (the 2nd at 03:00): not yet.
        assert_eq!(
            env_stale(&backups(last), at("2026-12-02T12:00:00Z"), None),
            None
        );
        assert_eq!(
            env_stale(&backups(last), at("2026-12-03T03:00:00Z"), None).as_deref(),
            Some("2 scheduled runs missed since the last backup 1d 23h ago")
        );
        assert_eq!(
            env_stale(&backups(None), at("2026-12-03T04:00:00Z"), None).as_deref(),
            Some("2 scheduled runs missed and no backup")
        );
    }

    #[test]
    fn without_a_schedule_only_stale_after_counts() {
        let backups = Backups {
            schedule: &[],
            timezone: chrono_tz::Tz::UTC,
            last: Some(at("2026-12-01T00:00:00Z")),
            since: at("2026-11-01T00:00:00Z"),
        };
        let now = at("2026-12-03T00:00:00Z");
        assert_eq!(env_stale(&backups, now, None), None);
        assert_eq!(
            env_stale(&backups, now, Some(Duration::from_secs(86_400))).as_deref(),
            Some("last backup 2d 0h ago (fleet.stale_after 1d 0h)")
        );
    }
}
