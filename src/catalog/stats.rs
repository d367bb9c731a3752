//! Figures for the metrics endpoint, read from the catalog at each scrape (nothing is
//! kept in memory, so they survive restarts).

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;

use super::db::Catalog;
use super::error::CatalogError;
use super::records::parse_time;

/// What the catalog says about one environment.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvStats {
    pub env: String,
    /// `ready`, `backing-up`, `updating`, `update-failed`.
    pub status: String,
    /// Completed backups listed.
    pub backups: u64,
    /// The newest completed backup: when it completed, how long it took, its
    /// logical size and what it newly stored.
    pub last_success: Option<DateTime<Utc>>,
    pub last_duration_seconds: Option<f64>,
    pub last_size: u64,
    pub last_stored: u64,
    /// The newest passed drill: when it finished and how long it took.
    pub drill_last_success: Option<DateTime<Utc>>,
    pub drill_last_duration_seconds: Option<f64>,
    /// Drills that failed.
    pub drill_failures: u64,
}

/// Finished jobs by kind and final state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcomes {
    pub kind: String,
    pub state: String,
    pub count: u64,
}

impl Catalog {
    /// Stats of `envs` (the configured environments), in their order.
    pub fn env_stats(&self, envs: &[String]) -> Result<Vec<EnvStats>, CatalogError> {
        let conn = self.lock();
        let mut status = conn.prepare_cached("SELECT status FROM environments WHERE name = ?1")?;
        let mut count = conn.prepare_cached(
            "SELECT count(*) FROM backups WHERE env = ?1 AND status = 'completed'",
        )?;
        let mut last = conn.prepare_cached(
            "SELECT b.created, b.completed, coalesce(sum(p.size), 0), coalesce(sum(p.stored), 0)
             FROM backups b LEFT JOIN parts p ON p.backup = b.rowid
             WHERE b.env = ?1 AND b.status = 'completed'
             GROUP BY b.rowid ORDER BY b.completed DESC, b.rowid DESC LIMIT 1",
        )?;
        let mut drill_passed = conn.prepare_cached(
            "SELECT started, finished FROM drills WHERE env = ?1 AND outcome = 'passed'
             ORDER BY finished DESC, id DESC LIMIT 1",
        )?;
        let mut drill_failed = conn
            .prepare_cached("SELECT count(*) FROM drills WHERE env = ?1 AND outcome = 'failed'")?;
        let mut stats = Vec::with_capacity(envs.len());
        for env in envs {
            let state: Option<String> = status.query_row([env], |r| r.get(0)).optional()?;
            let backups: i64 = count.query_row([env], |r| r.get(0))?;
            let newest: Option<(String, Option<String>, i64, i64)> = last
                .query_row([env], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()?;
            let mut entry = EnvStats {
                env: env.clone(),
                status: state.unwrap_or_else(|| "ready".into()),
                backups: backups as u64,
                last_success: None,
                last_duration_seconds: None,
                last_size: 0,
                last_stored: 0,
                drill_last_success: None,
                drill_last_duration_seconds: None,
                drill_failures: drill_failed.query_row([env], |r| r.get::<_, i64>(0))? as u64,
            };
            let drill: Option<(String, String)> = drill_passed
                .query_row([env], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((started, finished)) = drill {
                let (started, finished) = (parse_time(&started)?, parse_time(&finished)?);
                entry.drill_last_success = Some(finished);
                entry.drill_last_duration_seconds =
                    Some((finished - started).num_milliseconds() as f64 / 1000.0);
            }
            if let Some((created, Some(completed), size, stored)) = newest {
                let (created, completed) = (parse_time(&created)?, parse_time(&completed)?);
                entry.last_success = Some(completed);
                entry.last_duration_seconds =
                    Some((completed - created).num_milliseconds() as f64 / 1000.0);
                (entry.last_size, entry.last_stored) = (size as u64, stored as u64);
            }
            stats.push(entry);
        }
        Ok(stats)
    }

    /// Finished jobs counted by kind and state.
    pub fn job_outcomes(&self) -> Result<Vec<JobOutcomes>, CatalogError> {
        let conn = self.lock();
        let rows = conn
            .prepare_cached(
                "SELECT kind, state, count(*) FROM jobs
                 WHERE state IN ('succeeded', 'failed', 'cancelled')
                 GROUP BY kind, state ORDER BY kind, state",
            )?
            .query_map([], |r| {
                Ok(JobOutcomes {
                    kind: r.get(0)?,
                    state: r.get(1)?,
                    count: r.get::<_, i64>(2)? as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}
