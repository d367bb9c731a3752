//! Restore drills for people: `drill list` as a table, a drill's report as a block
//! with one line per part, check and command, then the warnings.

use super::blocks::Block;
use super::tables::render;
use super::text::{human_size, truncate};
use super::time::{Zone, block_time, table_time};
use crate::catalog::DrillRecord;
use crate::drill::report::{PartReport, Report, StepReport};

/// Error cells are cut to this many characters; `drill show` prints them whole.
const LONG_CELL: usize = 60;

pub fn list(rows: &[DrillRecord], zone: &impl Zone) -> String {
    let header = ["ID", "BACKUP", "FINISHED", "OUTCOME", "WARNINGS", "ERROR"];
    render(
        &header,
        rows.iter().map(|d| {
            vec![
                d.id.to_string(),
                d.backup.clone(),
                table_time(d.finished, zone),
                d.outcome.clone(),
                d.warnings.to_string(),
                truncate(d.error.as_deref().unwrap_or("-"), LONG_CELL),
            ]
        }),
    )
}

/// A drill's report (or, for an old record without one, its summary).
pub fn show(drill: &DrillRecord, zone: &impl Zone) -> String {
    let Ok(report) = serde_json::from_value::<Report>(drill.report.clone()) else {
        return Block::default()
            .row("drill", drill.id.to_string())
            .row("env", &drill.env)
            .row("backup", &drill.backup)
            .row("outcome", &drill.outcome)
            .optional("error", drill.error.as_deref())
            .render();
    };
    let mut block = Block::default();
    block
        .row("drill", report.id.to_string())
        .row("env", &report.env)
        .row("host", &report.host)
        .row("backup", &report.backup)
        .row("outcome", &report.outcome)
        .optional("error", report.error.as_deref())
        .row("started", block_time(report.started, zone))
        .row("took", format!("{:.1}s", report.duration_seconds))
        .optional("sandbox", report.sandbox.as_deref());
    for part in &report.parts {
        block.row(&format!("part {}", part.part), part_line(part));
    }
    for check in &report.checks {
        block.row("check", step_line(check));
    }
    for command in &report.commands {
        block.row("command", step_line(command));
    }
    for warning in &report.warnings {
        block.row("warning", warning);
    }
    block.render()
}

fn part_line(part: &PartReport) -> String {
    let figures = match (&part.tree, &part.database) {
        (Some(tree), _) => format!(
            "{} entries, {} files, {} checked",
            tree.entries,
            tree.files,
            human_size(tree.bytes)
        ),
        (_, Some(db)) => {
            let mut parts = Vec::new();
            if !db.tables.is_empty() {
                let rows: u64 = db.tables.values().sum();
                parts.push(format!("{} tables, {rows} rows", db.tables.len()));
            }
            if let Some(keys) = db.keys {
                parts.push(format!("{keys} keys"));
            }
            if let Some(integrity) = &db.integrity {
                parts.push(format!("integrity {integrity}"));
            }
            parts.join(", ")
        }
        _ => String::new(),
    };
    let detail = match &part.error {
        Some(error) => error.clone(),
        None => figures,
    };
    format!(
        "{} ({}, {:.1}s): {detail}",
        part.outcome, part.kind, part.seconds
    )
}

fn step_line(step: &StepReport) -> String {
    match &step.error {
        Some(error) => format!(
            "{} `{}` ({:.1}s): {error}",
            step.outcome, step.name, step.seconds
        ),
        None => format!("{} `{}` ({:.1}s)", step.outcome, step.name, step.seconds),
    }
}
