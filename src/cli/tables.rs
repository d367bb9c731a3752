//! Lists as aligned columns without borders, like `ps` or `kubectl get`: easy to read,
//! easy to `grep`. Times are local; sizes in binary units. Scripts use `--json`.

use comfy_table::{Table, presets};

use super::text::{human_size, or_dash, truncate};
use super::time::{Zone, table_time};
use super::views::{ActivityEntry, BackupRecord, BackupTotals, EnvView, JobRecord};

/// Error and detail cells are cut to this many characters; `show` prints them whole.
const LONG_CELL: usize = 48;

pub(super) fn render(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    let last = header.len().saturating_sub(1);
    for (index, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if index == last { 0 } else { 2 }));
    }
    let mut text = String::new();
    for line in table.lines() {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

pub fn environments(rows: &[EnvView], zone: &impl Zone) -> String {
    let header = [
        "NAME",
        "STATUS",
        "VERSION",
        "LAST BACKUP",
        "NEXT RUN",
        "LAST DRILL",
    ];
    render(
        &header,
        rows.iter().map(|env| {
            vec![
                env.name.clone(),
                env.status.clone(),
                env.version.clone().unwrap_or_else(|| "?".into()),
                env.last_backup_at
                    .map(|t| table_time(t, zone))
                    .unwrap_or_else(|| or_dash(env.last_backup.as_deref())),
                env.next_run
                    .map(|t| table_time(t, zone))
                    .unwrap_or_else(|| "-".into()),
                or_dash(env.last_drill.as_deref()),
            ]
        }),
    )
}

pub fn backups(rows: &[BackupRecord], zone: &impl Zone) -> String {
    let header = [
        "NAME", "STATUS", "CREATED", "VERSION", "TRIGGER", "SIZE", "STORED", "EXPIRES", "USER",
    ];
    render(
        &header,
        rows.iter().map(|backup| {
            let totals = BackupTotals::of(backup);
            vec![
                backup.name.clone(),
                backup.status.clone(),
                table_time(backup.created, zone),
                backup.version.clone(),
                backup.trigger.clone(),
                human_size(totals.size),
                human_size(totals.stored),
                backup
                    .expires
                    .map(|t| table_time(t, zone))
                    .unwrap_or_else(|| "never".into()),
                backup.user.clone(),
            ]
        }),
    )
}

pub fn jobs(rows: &[JobRecord]) -> String {
    let header = ["ID", "KIND", "ENV", "STATE", "USER", "BACKUP", "ERROR"];
    render(
        &header,
        rows.iter().map(|job| {
            vec![
                job.id.to_string(),
                job.kind.to_string(),
                or_dash(job.env.as_deref()),
                job.state.to_string(),
                job.user.clone(),
                or_dash(job.backup.as_deref()),
                job.error
                    .as_deref()
                    .map(|e| truncate(e, LONG_CELL))
                    .unwrap_or_else(|| "-".into()),
            ]
        }),
    )
}

pub fn activity(rows: &[ActivityEntry], zone: &impl Zone) -> String {
    let header = [
        "TIME", "USER", "ENV", "ACTION", "BACKUP", "OUTCOME", "DETAIL",
    ];
    render(
        &header,
        rows.iter().map(|entry| {
            vec![
                table_time(entry.time, zone),
                entry.user.clone(),
                or_dash(entry.env.as_deref()),
                entry.action.clone(),
                or_dash(entry.backup.as_deref()),
                entry.outcome.clone(),
                entry
                    .detail
                    .as_deref()
                    .map(|d| truncate(d, LONG_CELL))
                    .unwrap_or_else(|| "-".into()),
            ]
        }),
    )
}

/// A backup's parts, for `backup show`.
pub fn parts(backup: &BackupRecord) -> String {
    render(
        &["PART", "SIZE", "STORED"],
        backup.parts.iter().map(|part| {
            vec![
                part.part.clone(),
                human_size(part.size),
                human_size(part.stored),
            ]
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::PartSize;
    use chrono::{DateTime, FixedOffset, Utc};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn backup(name: &str, size: u64) -> BackupRecord {
        BackupRecord {
            name: name.into(),
            env: "live".into(),
            host: "web-01".into(),
            status: "completed".into(),
            version: "1.4.2".into(),
            trigger: "manual".into(),
            created: at("2026-11-24T03:00:00Z"),
            completed: Some(at("2026-11-24T03:01:00Z")),
            expires: Some(at("2026-12-08T03:00:00Z")),
            user: "root".into(),
            parts: vec![
                PartSize {
                    part: "code".into(),
                    size,
                    stored: 10,
                },
                PartSize {
                    part: "database:main".into(),
                    size,
                    stored: 0,
                },
            ],
            manifest: Some("abc".into()),
        }
    }

    #[test]
    fn backup_table_is_aligned_and_local() {
        let zone = FixedOffset::east_opt(3600).unwrap();
        let text = backups(
            &[backup("before-upgrade", 644_245_094), backup("b", 1)],
            &zone,
        );
        let expected = "\
NAME            STATUS     CREATED           VERSION  TRIGGER  SIZE     STORED  EXPIRES           USER
before-upgrade  completed  2026-11-24 04:00  1.4.2    manual   1.2 GiB  10 B    2026-12-08 04:00  root
b               completed  2026-11-24 04:00  1.4.2    manual   2 B      10 B    2026-12-08 04:00  root
";
        assert_eq!(text, expected);
    }

    #[test]
    fn empty_list_is_a_header() {
        assert_eq!(jobs(&[]), "ID  KIND  ENV  STATE  USER  BACKUP  ERROR\n");
    }

    #[test]
    fn job_errors_are_cut_to_one_short_line() {
        let job = JobRecord {
            id: 12,
            kind: crate::catalog::JobKind::Backup,
            env: Some("live".into()),
            state: crate::catalog::JobState::Failed,
            user: "ann".into(),
            backup: None,
            error: Some(format!("{}\nsecond line", "x".repeat(100))),
            created: at("2026-11-24T03:00:00Z"),
            started: None,
            finished: None,
        };
        let text = jobs(&[job]);
        let row = text.lines().nth(1).unwrap();
        assert!(
            row.starts_with("12  backup  live  failed  ann   -       xxx"),
            "{row}"
        );
        assert!(row.ends_with('…'), "{row}");
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn environments_show_unknown_values_plainly() {
        let env = EnvView {
            name: "live".into(),
            status: "ready".into(),
            version: None,
            last_error: None,
            last_backup: None,
            last_backup_at: None,
            next_run: Some(at("2026-11-25T03:00:00Z")),
            parts: vec![],
            safety_backup: None,
            last_drill: None,
            last_drill_at: None,
        };
        let text = environments(&[env], &Utc);
        assert_eq!(
            text.lines().nth(1).unwrap(),
            "live  ready   ?        -            2026-11-25 03:00  -"
        );
    }
}
