//! A drill's report: the evidence it keeps, and the warnings it raises.
//!
//! The report is JSON (field names are an interface: `docs/drills.md`). It is kept
//! in the catalog (`drill list`, `drill show`) and in the store next to the backup's
//! manifest. [`warnings`] compares a drill's figures with the previous drill's: a
//! part or table that is empty now but was not, or that shrank by more than the
//! configured fraction, is the classic silent failure (a valid backup of an emptied
//! table) and is reported, though it does not fail the drill.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::DrillRecord;
use crate::message::one_line;
use crate::repo::check::TreeCheck;
use crate::sources::scratch::DatabaseFigures;

pub const PASSED: &str = "passed";
pub const FAILED: &str = "failed";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The drill's job id on the host that ran it.
    pub id: i64,
    pub host: String,
    pub env: String,
    pub backup: String,
    /// The backup's manifest id.
    pub manifest: String,
    pub user: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub duration_seconds: f64,
    /// `passed` or `failed`.
    pub outcome: String,
    /// What failed, when it did.
    pub error: Option<String>,
    pub parts: Vec<PartReport>,
    pub checks: Vec<StepReport>,
    pub commands: Vec<StepReport>,
    pub warnings: Vec<String>,
    /// Where the sandbox was kept (`--keep`, `keep_sandbox_on_failure`).
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartReport {
    pub part: String,
    /// `tree`, or the database's kind (`postgres`, `mariadb`, `sqlite`, `redis`).
    pub kind: String,
    pub outcome: String,
    pub seconds: f64,
    /// The part's logical size in the backup.
    pub size: u64,
    /// Trees: what the entry-by-entry check covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<TreeCheck>,
    /// Databases: what the scratch engine measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseFigures>,
    /// Redis: the keys the server held when the backup was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_at_backup: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One operator check (`database: sql`) or command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub name: String,
    pub outcome: String,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    /// The catalog's record of this report.
    pub fn to_record(&self) -> DrillRecord {
        DrillRecord {
            id: self.id,
            env: self.env.clone(),
            host: self.host.clone(),
            backup: self.backup.clone(),
            started: self.started,
            finished: self.finished,
            outcome: self.outcome.clone(),
            error: self.error.clone(),
            warnings: self.warnings.len() as u32,
            report: serde_json::to_value(self).expect("a report serializes"),
        }
    }

    /// This report read from the store (hostile input): `None` unless it names a
    /// valid environment, backup and host; every free text kept to one printable
    /// line.
    pub fn checked(mut self) -> Option<Self> {
        let names = [&self.env, &self.backup, &self.host];
        if !names.iter().all(|n| crate::repo::manifest::is_safe_name(n)) {
            return None;
        }
        let line = |text: &mut String| *text = one_line(text);
        let lines = |text: &mut Option<String>| {
            if let Some(text) = text {
                *text = one_line(text);
            }
        };
        for text in [&mut self.manifest, &mut self.user, &mut self.outcome] {
            line(text);
        }
        lines(&mut self.error);
        lines(&mut self.sandbox);
        self.warnings.iter_mut().for_each(line);
        for part in &mut self.parts {
            line(&mut part.part);
            line(&mut part.kind);
            line(&mut part.outcome);
            lines(&mut part.error);
            if let Some(db) = &mut part.database {
                db.tables = std::mem::take(&mut db.tables)
                    .into_iter()
                    .map(|(table, rows)| (one_line(&table), rows))
                    .collect();
                lines(&mut db.integrity);
            }
        }
        for step in self.checks.iter_mut().chain(self.commands.iter_mut()) {
            line(&mut step.name);
            line(&mut step.outcome);
            lines(&mut step.error);
        }
        Some(self)
    }

    /// The first failure, naming what failed: a part, a check or a command.
    pub fn first_failure(&self) -> Option<String> {
        let part = self.parts.iter().find(|p| p.outcome == FAILED).map(|p| {
            format!(
                "part {}: {}",
                p.part,
                p.error.as_deref().unwrap_or("failed")
            )
        });
        let step = |kind: &str, steps: &[StepReport]| {
            steps.iter().find(|s| s.outcome == FAILED).map(|s| {
                format!(
                    "{kind} `{}` {}",
                    s.name,
                    s.error.as_deref().unwrap_or("failed")
                )
            })
        };
        part.or_else(|| step("check", &self.checks))
            .or_else(|| step("command", &self.commands))
    }
}

/// Warnings from comparing `parts` with what the backup recorded (Redis keys: more
/// than 1% apart) and with the `previous` drill's: empty now but not then, or shrunk
/// by more than `shrink` (a fraction).
pub fn warnings(parts: &[PartReport], previous: Option<&Report>, shrink: f64) -> Vec<String> {
    let mut found: Vec<String> = parts.iter().filter_map(keys_differ).collect();
    let Some(previous) = previous else {
        return found;
    };
    for part in parts.iter().filter(|p| p.outcome == PASSED) {
        let Some(before) = previous.parts.iter().find(|p| p.part == part.part) else {
            continue;
        };
        compare(
            &mut found,
            &format!("part {}", part.part),
            "bytes",
            before.size,
            part.size,
            shrink,
        );
        if let (Some(now), Some(then)) = (&part.database, &before.database) {
            for (table, &rows_then) in &then.tables {
                let rows_now = now.tables.get(table).copied().unwrap_or(0);
                let what = format!("table {table} of {}", part.part);
                compare(&mut found, &what, "rows", rows_then, rows_now, shrink);
            }
            if let (Some(keys_then), Some(keys_now)) = (then.keys, now.keys) {
                compare(
                    &mut found,
                    &format!("part {}", part.part),
                    "keys",
                    keys_then,
                    keys_now,
                    shrink,
                );
            }
        }
    }
    found
}

fn keys_differ(part: &PartReport) -> Option<String> {
    let recorded = part.keys_at_backup?;
    let loaded = part.database.as_ref()?.keys?;
    let apart = loaded.abs_diff(recorded) as f64 > recorded as f64 * 0.01;
    (part.outcome == PASSED && apart).then(|| {
        format!(
            "part {} loads {loaded} keys, but the server held {recorded} when it was backed up",
            part.part
        )
    })
}

fn compare(found: &mut Vec<String>, what: &str, unit: &str, then: u64, now: u64, shrink: f64) {
    if then == 0 {
        return;
    }
    // Table names come from the dump: one printable line.
    if now == 0 {
        found.push(one_line(&format!(
            "{what} is empty in the backup but had {then} {unit} at the previous drill"
        )));
    } else if (now as f64) < (then as f64) * (1.0 - shrink) {
        let lost = 100.0 * (1.0 - now as f64 / then as f64);
        found.push(one_line(&format!(
            "{what} shrank by {lost:.0}% since the previous drill ({then} → {now} {unit})"
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn part(name: &str, size: u64, tables: &[(&str, u64)]) -> PartReport {
        PartReport {
            part: name.into(),
            kind: "postgres".into(),
            outcome: PASSED.into(),
            seconds: 1.0,
            size,
            tree: None,
            keys_at_backup: None,
            database: Some(DatabaseFigures {
                tables: tables
                    .iter()
                    .map(|(t, n)| (t.to_string(), *n))
                    .collect::<BTreeMap<_, _>>(),
                ..Default::default()
            }),
            error: None,
        }
    }

    fn report(parts: Vec<PartReport>) -> Report {
        Report {
            id: 1,
            host: "h".into(),
            env: "live".into(),
            backup: "b".into(),
            manifest: "m".into(),
            user: "root".into(),
            started: Utc::now(),
            finished: Utc::now(),
            duration_seconds: 1.0,
            outcome: PASSED.into(),
            error: None,
            parts,
            checks: Vec::new(),
            commands: Vec::new(),
            warnings: Vec::new(),
            sandbox: None,
        }
    }

    #[test]
    fn an_emptied_or_shrunk_table_is_a_warning_and_growth_is_not() {
        let before = report(vec![part(
            "database:shop",
            1000,
            &[
                ("public.orders", 120),
                ("public.items", 1000),
                ("public.log", 0),
            ],
        )]);
        let now = vec![part(
            "database:shop",
            900,
            &[
                ("public.orders", 0),
                ("public.items", 400),
                ("public.log", 5),
            ],
        )];
        assert_eq!(
            warnings(&now, Some(&before), 0.5),
            [
                "table public.items of database:shop shrank by 60% since the previous drill (1000 → 400 rows)",
                "table public.orders of database:shop is empty in the backup but had 120 rows at the previous drill",
            ]
        );
        assert!(warnings(&now, None, 0.5).is_empty());
        assert!(warnings(&now, Some(&report(Vec::new())), 0.5).is_empty());
        let mut cache = part("database:cache", 10, &[]);
        cache.database.as_mut().unwrap().keys = Some(40);
        cache.keys_at_backup = Some(42);
        assert_eq!(
            warnings(&[cache.clone()], None, 0.5),
            ["part database:cache loads 40 keys, but the server held 42 when it was backed up"]
        );
        cache.keys_at_backup = Some(40);
        assert!(warnings(&[cache], None, 0.5).is_empty());
    }

    #[test]
    fn a_report_from_the_store_is_checked_and_kept_to_one_line() {
        let mut stored = report(vec![part("database:shop", 10, &[("evil\n\u{1b}[2J", 1)])]);
        stored.error = Some("bad\nFAKE: ok".into());
        let checked = stored.clone().checked().unwrap();
        assert_eq!(checked.error.as_deref(), Some("bad FAKE: ok"));
        let tables = &checked.parts[0].database.as_ref().unwrap().tables;
        assert_eq!(tables.keys().next().unwrap(), "evil \\u{1b}[2J");
        stored.backup = "../x".into();
        assert!(stored.checked().is_none());
    }
}
