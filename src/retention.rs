//! Retention: which backups to prune. Pure planning, tested on synthetic lists.
//!
//! A completed backup is kept when any of these holds, and pruned otherwise:
//!
//! - it has not expired (`expires` is in the future, or absent: kept forever);
//! - it is the newest completed backup of its environment (never pruned by age alone);
//! - a running job uses it (the source of a restore, the safety backup of one);
//! - a count-based rule picks it: the `keep_last` newest, and the newest backup of each
//!   of the `keep_daily` / `keep_weekly` / `keep_monthly` most recent days, ISO weeks
//!   and months that have backups (in the daemon's time zone).
//!
//! Backups still being created are never considered.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use serde::Serialize;

/// Count-based keeps, each 0 when unused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepCounts {
    pub last: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

/// What the planner needs to know of a backup.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: String,
    pub created: DateTime<Utc>,
    pub expires: Option<DateTime<Utc>>,
    pub completed: bool,
    pub in_use: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub name: String,
    pub keep: bool,
    /// Why: `not expired`, `newest`, `in use`, `keep_last`, `keep_daily`, ..., `expired`.
    pub reason: String,
}

/// Decides for each completed backup of one environment.
pub fn plan(backups: &[Candidate], keep: KeepCounts, now: DateTime<Utc>, tz: Tz) -> Vec<Decision> {
    let mut completed: Vec<&Candidate> = backups.iter().filter(|b| b.completed).collect();
    // Newest first; the name breaks ties so the plan is deterministic.
    completed.sort_by(|a, b| (b.created, &b.name).cmp(&(a.created, &a.name)));
    let picked_last: HashSet<&str> = completed
        .iter()
        .take(keep.last as usize)
        .map(|b| b.name.as_str())
        .collect();
    let daily = newest_per_period(&completed, keep.daily, |t| {
        t.with_timezone(&tz).date_naive().to_string()
    });
    let weekly = newest_per_period(&completed, keep.weekly, |t| {
        let week = t.with_timezone(&tz).iso_week();
        format!("{}-W{}", week.year(), week.week())
    });
    let monthly = newest_per_period(&completed, keep.monthly, |t| {
        let local = t.with_timezone(&tz);
        format!("{}-{}", local.year(), local.month())
    });
    completed
        .iter()
        .enumerate()
        .map(|(index, backup)| {
            let name = backup.name.as_str();
            let reason = if backup.expires.is_none_or(|e| e > now) {
                "not expired"
            } else if index == 0 {
                "newest"
            } else if backup.in_use {
                "in use"
            } else if picked_last.contains(name) {
                "keep_last"
            } else if daily.contains(name) {
                "keep_daily"
            } else if weekly.contains(name) {
                "keep_weekly"
            } else if monthly.contains(name) {
                "keep_monthly"
            } else {
                "expired"
            };
            Decision {
                name: name.to_owned(),
                keep: reason != "expired",
                reason: reason.to_owned(),
            }
        })
        .collect()
}

/// The newest backup of each of the `count` most recent periods that have backups.
fn newest_per_period<'a>(
    newest_first: &[&'a Candidate],
    count: u32,
    period: impl Fn(DateTime<Utc>) -> String,
) -> HashSet<&'a str> {
    let mut seen = HashSet::new();
    let mut picked = HashSet::new();
    for backup in newest_first {
        if seen.len() >= count as usize {
            break;
        }
        if seen.insert(period(backup.created)) {
            picked.insert(backup.name.as_str());
        }
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
    }

    /// One backup a day for `days` days, each expiring after `retention_days`.
    fn daily_backups(days: i64, retention_days: i64) -> Vec<Candidate> {
        (0..days)
            .map(|ago| {
                let created = now() - Duration::days(ago);
                Candidate {
                    name: format!("day-{ago:03}"),
                    created,
                    expires: Some(created + Duration::days(retention_days)),
                    completed: true,
                    in_use: false,
                }
            })
            .collect()
    }

    fn kept(plan: &[Decision]) -> Vec<&str> {
        plan.iter()
            .filter(|d| d.keep)
            .map(|d| d.name.as_str())
            .collect()
    }

    #[test]
    fn expired_backups_go_and_the_rest_stay() {
        let plan = plan(
            &daily_backups(20, 14),
            KeepCounts::default(),
            now(),
            chrono_tz::UTC,
        );
        assert_eq!(kept(&plan).len(), 14, "{plan:?}");
        assert!(
            plan.iter()
                .filter(|d| !d.keep)
                .all(|d| d.reason == "expired")
        );
    }

    #[test]
    fn the_newest_backup_survives_even_when_expired() {
        let mut backups = daily_backups(3, 1);
        for b in &mut backups {
            b.expires = Some(now() - Duration::hours(1));
        }
        let plan = plan(&backups, KeepCounts::default(), now(), chrono_tz::UTC);
        assert_eq!(kept(&plan), ["day-000"]);
        assert_eq!(plan[0].reason, "newest");
    }

    #[test]
    fn backups_in_use_and_never_expiring_ones_are_kept() {
        let mut backups = daily_backups(10, 1);
        backups[5].in_use = true;
        backups[7].expires = None;
        backups.push(Candidate {
            name: "creating".into(),
            created: now(),
            expires: None,
            completed: false,
            in_use: false,
        });
        let plan = plan(&backups, KeepCounts::default(), now(), chrono_tz::UTC);
        // day-001 expired just now (created a day ago, kept for a day).
        assert_eq!(kept(&plan), ["day-000", "day-005", "day-007"]);
        assert!(
            plan.iter().all(|d| d.name != "creating"),
            "backups being created are not considered"
        );
    }

    #[test]
    fn count_based_keeps_pick_the_newest_of_each_period() {
        // Two backups a day for 90 days, all expired after one day.
        let mut backups = Vec::new();
        for ago in 0..90 {
            for hour in [3, 15] {
                let created =
                    now() - Duration::days(ago) - Duration::hours(12) + Duration::hours(hour);
                backups.push(Candidate {
                    name: format!("d{ago:02}-h{hour:02}"),
                    created,
                    expires: Some(created + Duration::days(1)),
                    completed: true,
                    in_use: false,
                });
            }
        }
        let keep = KeepCounts {
            last: 3,
            daily: 7,
            weekly: 4,
            monthly: 3,
        };
        let plan = plan(&backups, keep, now(), chrono_tz::UTC);
        let kept = kept(&plan);
        // 3 last (two of today + yesterday's later one), 7 daily newest, 4 weekly, 3 monthly,
        // overlapping; every day's pick is that day's 15:00 backup.
        assert!(
            kept.contains(&"d06-h15") && !kept.contains(&"d06-h03"),
            "{kept:?}"
        );
        assert!(
            !kept.contains(&"d08-h15")
                || plan
                    .iter()
                    .any(|d| d.name == "d08-h15" && d.reason != "keep_daily")
        );
        let monthly: Vec<_> = plan.iter().filter(|d| d.reason == "keep_monthly").collect();
        assert!(monthly.len() <= 3);
        assert!(kept.len() <= 3 + 7 + 4 + 3 && kept.len() >= 7, "{kept:?}");
    }
}
