//! Single objects as `key: value` lines, keys aligned. Times are local, to the second.

use super::tables;
use super::text::human_size;
use super::time::{Zone, block_time, human_duration};
use super::views::{BackupRecord, BackupTotals, EnvView, JobRecord, StatusView};

/// Lines of `key: value`, values aligned after the longest key.
#[derive(Debug, Default)]
pub struct Block {
    rows: Vec<(String, String)>,
}

impl Block {
    pub fn row(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.rows.push((key.to_owned(), value.into()));
        self
    }

    /// A row only when there is a value.
    pub fn optional(&mut self, key: &str, value: Option<impl Into<String>>) -> &mut Self {
        if let Some(value) = value {
            self.row(key, value);
        }
        self
    }

    pub fn render(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|(key, _)| key.chars().count() + 1)
            .max()
            .unwrap_or(0);
        let mut text = String::new();
        for (key, value) in &self.rows {
            let label = format!("{key}:");
            text.push_str(format!("{label:<width$}  {value}").trim_end());
            text.push('\n');
        }
        text
    }
}

pub fn status(view: &StatusView) -> String {
    let store = match (&view.store.reachable, &view.store.error) {
        (true, _) => format!("{} (reachable)", view.store.url),
        (false, Some(error)) => format!("{} (unreachable: {error})", view.store.url),
        (false, None) => format!("{} (unreachable)", view.store.url),
    };
    Block::default()
        .row("version", &view.version)
        .row("host", &view.host)
        .row("uptime", human_duration(view.uptime_seconds))
        .row("store", store)
        .row(
            "jobs",
            format!("{} running, {} queued", view.jobs.running, view.jobs.queued),
        )
        .row("environments", view.environments.to_string())
        .render()
}

pub fn environment(env: &EnvView, zone: &impl Zone) -> String {
    let last_backup = match (&env.last_backup, env.last_backup_at) {
        (Some(name), Some(at)) => format!("{name} ({})", block_time(at, zone)),
        (Some(name), None) => name.clone(),
        (None, _) => "-".into(),
    };
    Block::default()
        .row("name", &env.name)
        .row("status", &env.status)
        .row(
            "version",
            env.version.clone().unwrap_or_else(|| "(unreadable)".into()),
        )
        .optional("last error", env.last_error.as_deref())
        .row("last backup", last_backup)
        .row(
            "next run",
            env.next_run
                .map(|t| block_time(t, zone))
                .unwrap_or_else(|| "-".into()),
        )
        .row("parts", env.parts.join(", "))
        .optional("safety backup", env.safety_backup.as_deref())
        .optional(
            "last drill",
            env.last_drill
                .as_ref()
                .map(|outcome| match env.last_drill_at {
                    Some(at) => format!("{outcome} ({})", block_time(at, zone)),
                    None => outcome.clone(),
                }),
        )
        .render()
}

/// What `restore --dry-run` found, part by part.
pub fn restore_plan(plan: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    let number = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let mut out = format!(
        "restore of {} from backup {} of {} (version {}) would:\n",
        text(&plan["env"]),
        text(&plan["backup"]),
        text(&plan["from"]),
        text(&plan["version"])
    );
    for part in plan["parts"].as_array().into_iter().flatten() {
        let (from, to) = (text(&part["part"]), text(&part["target"]));
        let p = &part["plan"];
        if p.is_object() {
            out.push_str(&format!(
                "  {from} -> {to}: write {} file(s) ({}), keep {}, remove {} path(s); fetch {}\n",
                number(&p["files_to_write"]),
                human_size(number(&p["bytes_to_write"])),
                number(&p["files_to_keep"]),
                number(&p["paths_to_remove"]),
                human_size(number(&p["bytes_to_fetch"]))
            ));
        } else {
            out.push_str(&format!(
                "  {from} -> {to}: replace the database ({})\n",
                human_size(number(&part["bytes_to_write"]))
            ));
        }
    }
    let untouched: Vec<String> = plan["untouched"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    if !untouched.is_empty() {
        out.push_str(&format!("  left as they are: {}\n", untouched.join(", ")));
    }
    out
}

pub fn backup(backup: &BackupRecord, zone: &impl Zone) -> String {
    let totals = BackupTotals::of(backup);
    let mut text = Block::default()
        .row("name", &backup.name)
        .row("env", &backup.env)
        .row("host", &backup.host)
        .row("status", &backup.status)
        .row("version", &backup.version)
        .row("trigger", &backup.trigger)
        .row("created", block_time(backup.created, zone))
        .optional("completed", backup.completed.map(|t| block_time(t, zone)))
        .row(
            "expires",
            backup
                .expires
                .map(|t| block_time(t, zone))
                .unwrap_or_else(|| "never".into()),
        )
        .row("user", &backup.user)
        .row(
            "size",
            format!("{} ({} bytes)", human_size(totals.size), totals.size),
        )
        .row(
            "stored",
            format!("{} ({} bytes)", human_size(totals.stored), totals.stored),
        )
        .optional("manifest", backup.manifest.as_deref())
        .render();
    if !backup.parts.is_empty() {
        text.push('\n');
        text.push_str(&tables::parts(backup));
    }
    text
}

pub fn job(job: &JobRecord, zone: &impl Zone) -> String {
    Block::default()
        .row("id", job.id.to_string())
        .row("kind", job.kind.as_str())
        .optional("env", job.env.as_deref())
        .row("state", job.state.as_str())
        .row("user", &job.user)
        .optional("backup", job.backup.as_deref())
        .optional("error", job.error.as_deref())
        .row("created", block_time(job.created, zone))
        .optional("started", job.started.map(|t| block_time(t, zone)))
        .optional("finished", job.finished.map(|t| block_time(t, zone)))
        .render()
}

/// A flat report of counters (prune, verify, catalog rebuild): keys as words, byte
/// counts (`bytes_*`) also in binary units. Lists and objects are left to the caller.
/// What `prune` did (or would do): the backups, then what the store reclaimed.
pub fn prune(outcome: &serde_json::Value) -> String {
    let dry_run = outcome["dry_run"].as_bool().unwrap_or(false);
    let pruned: Vec<&str> = outcome["pruned"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    let verb = if dry_run { "would prune" } else { "pruned" };
    let mut text = match pruned.len() {
        0 => format!("{verb} no backups: none has expired\n"),
        n => format!(
            "{verb} {n} expired backup{}:\n",
            if n == 1 { "" } else { "s" }
        ),
    };
    for name in pruned {
        text.push_str(&format!("  {name}\n"));
    }
    text.push_str(&kept_for_locks(&outcome["plans"]));
    let waiting = &outcome["waiting_for_lock"];
    if let Some(objects) = waiting["objects"].as_u64().filter(|n| *n > 0) {
        let next = waiting["next_unlock"].as_str().unwrap_or("unknown");
        text.push_str(&format!(
            "{objects} objects no backup needs wait for their lock (the first passes at {next})\n"
        ));
    }
    if dry_run {
        text.push_str("dry run: nothing was deleted\n");
    } else if outcome["store"].is_object() {
        text.push_str(&counters(&outcome["store"]));
    }
    text
}

/// Expired backups kept because their Object Lock lasts (`store.lock`).
fn kept_for_locks(plans: &serde_json::Value) -> String {
    let mut text = String::new();
    for (env, decisions) in plans.as_object().into_iter().flatten() {
        for decision in decisions.as_array().into_iter().flatten() {
            let reason = decision["reason"].as_str().unwrap_or_default();
            if reason.starts_with("locked until ") {
                let name = decision["name"].as_str().unwrap_or_default();
                text.push_str(&format!("expired but kept, {reason}: {env}/{name}\n"));
            }
        }
    }
    text
}

pub fn counters(report: &serde_json::Value) -> String {
    let mut block = Block::default();
    let Some(fields) = report.as_object() else {
        return block.render();
    };
    for (key, value) in fields {
        let label = key.replace('_', " ");
        match value {
            serde_json::Value::Number(number)
                if key.starts_with("bytes_") || key.ends_with("_bytes") =>
            {
                let bytes = number.as_u64().unwrap_or(0);
                block.row(&label, format!("{} ({bytes} bytes)", human_size(bytes)))
            }
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => &mut block,
            serde_json::Value::String(text) => block.row(&label, text.as_str()),
            other => block.row(&label, other.to_string()),
        };
    }
    block.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::views::{QueueView, StoreView};
    use serde_json::json;

    #[test]
    fn prune_says_which_expired_backups_wait_for_their_lock() {
        let outcome = json!({
            "dry_run": true,
            "pruned": [],
            "plans": {"live": [
                {"name": "b2", "keep": true, "reason": "newest"},
                {"name": "b1", "keep": true, "reason": "locked until 2026-12-22T03:00:01Z"},
            ]},
            "store": null,
            "waiting_for_lock": {"objects": 3, "next_unlock": "2026-12-20T00:00:00Z"},
        });
        assert_eq!(
            prune(&outcome),
            "would prune no backups: none has expired\n\
             expired but kept, locked until 2026-12-22T03:00:01Z: live/b1\n\
             3 objects no backup needs wait for their lock (the first passes at 2026-12-20T00:00:00Z)\n\
             dry run: nothing was deleted\n"
        );
    }

    #[test]
    fn block_aligns_values() {
        let text = Block::default()
            .row("id", "7")
            .row("finished", "now")
            .optional("error", None::<&str>)
            .render();
        assert_eq!(text, "id:        7\nfinished:  now\n");
    }

    #[test]
    fn status_block() {
        let view = StatusView {
            version: "0.1.0".into(),
            host: "web-01".into(),
            uptime_seconds: 3 * 86_400 + 3600,
            store: StoreView {
                url: "file:///b".into(),
                reachable: false,
                error: Some("timed out".into()),
            },
            jobs: QueueView {
                queued: 2,
                running: 1,
            },
            environments: 3,
        };
        assert_eq!(
            status(&view),
            "version:       0.1.0\nhost:          web-01\nuptime:        3d 1h\n\
             store:         file:///b (unreachable: timed out)\njobs:          1 running, 2 queued\n\
             environments:  3\n"
        );
    }

    #[test]
    fn counters_humanize_bytes_and_skip_lists() {
        let report =
            json!({ "backups": 2, "bytes_read": 1536, "problems": ["x"], "packs_read": 1 });
        assert_eq!(
            counters(&report),
            "backups:     2\nbytes read:  1.5 KiB (1536 bytes)\npacks read:  1\n"
        );
    }
}
