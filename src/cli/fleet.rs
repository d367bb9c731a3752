//! The fleet for people: `fleet list` as one table (a line per host, then one per
//! environment), `fleet show HOST` as a block, its environments and its backups.

use serde::Deserialize;

use super::blocks::Block;
use super::tables::render;
use super::text::{human_size, truncate};
use super::time::{Zone, block_time, human_duration, table_time};
use crate::fleet::view::{EnvView, HostView};

/// Reasons and errors are cut to this many characters in a table.
const LONG_CELL: usize = 60;

/// `fleet show`'s answer.
#[derive(Debug, Deserialize)]
pub struct HostDetail {
    pub host: HostView,
    pub backups: Vec<FleetBackup>,
}

#[derive(Debug, Deserialize)]
pub struct FleetBackup {
    pub env: String,
    pub name: String,
    pub completed: chrono::DateTime<chrono::Utc>,
    pub version: String,
    pub trigger: String,
    pub size: u64,
}

const HEADER: [&str; 7] = [
    "HOST",
    "ENV",
    "STATUS",
    "LAST BACKUP",
    "AGE",
    "BACKUPS",
    "STALE",
];

pub fn list(hosts: &[HostView], zone: &impl Zone) -> String {
    render(&HEADER, hosts.iter().flat_map(|host| rows(host, zone)))
}

pub fn show(detail: &HostDetail, zone: &impl Zone) -> String {
    let host = &detail.host;
    let mut block = Block::default();
    block
        .row("host", &host.host)
        .optional("envsnap", host.envsnap.as_deref())
        .optional("heartbeat", host.heartbeat.map(|t| block_time(t, zone)))
        .row("stale", host.stale_reason.as_deref().unwrap_or("no"))
        .optional("retired", host.retired.then_some("yes"))
        .optional("error", host.error.as_deref());
    let mut text = block.render();
    text.push('\n');
    text.push_str(&render(&HEADER, rows(host, zone)));
    text.push('\n');
    text.push_str(&render(
        &["ENV", "BACKUP", "COMPLETED", "VERSION", "TRIGGER", "SIZE"],
        detail.backups.iter().map(|b| {
            vec![
                b.env.clone(),
                b.name.clone(),
                table_time(b.completed, zone),
                b.version.clone(),
                b.trigger.clone(),
                human_size(b.size),
            ]
        }),
    ));
    text
}

/// What `fleet forget` did.
pub fn forgotten(data: &serde_json::Value) -> String {
    let host = data["host"].as_str().unwrap_or_default();
    match data["objects_deleted"].as_u64().unwrap_or_default() {
        0 => format!("retired host {host}; its backups stay in the store\n"),
        n => format!("retired host {host}; deleted its {n} objects from the store\n"),
    }
}

/// A host's line (its heartbeat), then one per environment.
fn rows(host: &HostView, zone: &impl Zone) -> Vec<Vec<String>> {
    let state = match (&host.error, host.retired, host.heartbeat_age_seconds) {
        (Some(error), _, _) => truncate(error, LONG_CELL),
        (None, true, _) => "retired".to_owned(),
        (None, false, Some(age)) => format!("heartbeat {} ago", human_duration(age as u64)),
        (None, false, None) => "no heartbeat".to_owned(),
    };
    let mut rows = vec![vec![
        host.host.clone(),
        "-".to_owned(),
        state,
        "-".to_owned(),
        "-".to_owned(),
        "-".to_owned(),
        stale_cell(host.stale_reason.as_deref()),
    ]];
    rows.extend(
        host.environments
            .iter()
            .map(|env| env_row(&host.host, env, zone)),
    );
    rows
}

fn env_row(host: &str, env: &EnvView, zone: &impl Zone) -> Vec<String> {
    let last = match (&env.last_backup, env.last_backup_at) {
        (Some(name), _) => name.clone(),
        (None, Some(at)) => table_time(at, zone),
        (None, None) => "-".to_owned(),
    };
    vec![
        host.to_owned(),
        env.name.clone(),
        env.status.clone().unwrap_or_else(|| "-".to_owned()),
        last,
        env.last_backup_age_seconds
            .map_or_else(|| "-".to_owned(), |s| human_duration(s as u64)),
        env.backups.to_string(),
        stale_cell(env.stale_reason.as_deref()),
    ]
}

fn stale_cell(reason: Option<&str>) -> String {
    reason.map_or_else(
        || "-".to_owned(),
        |r| truncate(&format!("STALE: {r}"), LONG_CELL),
    )
}
