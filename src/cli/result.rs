//! A request's result: sending it, showing it to people (or to scripts, with
//! `--json`), and whether it makes the command fail.

use std::io::Write;

use serde::de::DeserializeOwned;

use super::error::CliError;
use super::progress::ProgressDisplay;
use super::time::{self, Zone};
use super::views::{
    CreatedBackup, DeletedBackup, EnvView, JobRecord, Reloaded, StatusView, VerifyProblems,
};
use super::{blocks, download, drills, fleet, tables, text};
use crate::control::client::Client;
use crate::control::protocol::{JobState, Request};

/// Sends `request`, prints its result on stdout, and fails when the result says so.
pub async fn run(client: &Client, request: Request, json: bool) -> Result<(), CliError> {
    let follows = matches!(
        request,
        Request::BackupCreate { wait: true, .. }
            | Request::Drill { wait: true, .. }
            | Request::Restore {
                wait: true,
                dry_run: false,
                ..
            }
            | Request::JobWatch { .. }
    );
    let display = if follows && !json {
        ProgressDisplay::on_terminal()
    } else {
        None
    };
    let result = client
        .call(request.clone(), |progress| {
            if let Some(display) = &display {
                display.update(progress);
            }
        })
        .await;
    if let Some(display) = display {
        display.finish();
    }
    let raw = result?;
    // As it came for scripts (pretty on a terminal); parsed only to be shown to people.
    let mut stdout = std::io::stdout().lock();
    if json && !std::io::IsTerminal::is_terminal(&stdout) {
        stdout.write_all(raw.get().as_bytes())?;
        stdout.write_all(b"\n")?;
        stdout.flush()?;
        if !needs_status_check(&request) {
            return Ok(());
        }
    }
    let data: serde_json::Value = serde_json::from_str(raw.get())?;
    if json && std::io::IsTerminal::is_terminal(&stdout) {
        let mut text = serde_json::to_string_pretty(&data).expect("a JSON value always serializes");
        text.push('\n');
        stdout.write_all(text.as_bytes())?;
    } else if !json {
        stdout.write_all(render(&request, &data, &chrono::Local)?.as_bytes())?;
    }
    stdout.flush()?;
    result_status(&request, &data)
}

/// The human form of a result, chosen by the request that asked for it.
pub fn render(
    request: &Request,
    data: &serde_json::Value,
    zone: &impl Zone,
) -> Result<String, serde_json::Error> {
    Ok(match request {
        Request::Status => blocks::status(&decode::<StatusView>(data)?),
        Request::Reload => {
            let count = decode::<Reloaded>(data)?.environments;
            let plural = if count == 1 { "" } else { "s" };
            format!("configuration reloaded: {count} environment{plural}\n")
        }
        Request::EnvList => tables::environments(&decode::<Vec<EnvView>>(data)?, zone),
        Request::EnvShow { .. } => blocks::environment(&decode(data)?, zone),
        Request::BackupCreate { wait: false, .. } => queued("job", &decode(data)?),
        Request::BackupCreate { wait: true, .. } => {
            blocks::backup(&decode::<CreatedBackup>(data)?.backup, zone)
        }
        Request::BackupList { .. } => tables::backups(&decode::<Vec<_>>(data)?, zone),
        Request::BackupShow { .. } | Request::BackupKeep { .. } => {
            blocks::backup(&decode(data)?, zone)
        }
        Request::BackupDownload { .. } => download::summary(data, None),
        Request::BackupLink { .. } => link(data, zone),
        Request::BackupDelete { .. } => {
            let deleted: DeletedBackup = decode(data)?;
            format!(
                "deleted backup {}\n{}",
                deleted.deleted,
                blocks::counters(&deleted.prune)
            )
        }
        Request::Import { wait: false, .. } => queued("import job", &decode(data)?),
        Request::Import { wait: true, .. } => {
            blocks::backup(&decode::<CreatedBackup>(data)?.backup, zone)
        }
        Request::Restore { dry_run: true, .. } => blocks::restore_plan(data),
        Request::Restore { wait: false, .. } => queued("restore job", &decode(data)?),
        Request::Restore { .. } => blocks::job(&decode(data)?, zone),
        Request::Drill { wait: false, .. } => queued("drill job", &decode(data)?),
        Request::Drill { wait: true, .. } | Request::DrillShow { .. } => {
            drills::show(&decode(data)?, zone)
        }
        Request::DrillList { .. } => drills::list(&decode::<Vec<_>>(data)?, zone),
        Request::FleetList => fleet::list(&decode::<Vec<_>>(data)?, zone),
        Request::FleetShow { .. } => fleet::show(&decode(data)?, zone),
        Request::FleetForget { .. } => fleet::forgotten(data),
        Request::JobList => tables::jobs(&decode::<Vec<_>>(data)?),
        Request::JobShow { .. } | Request::JobWatch { .. } | Request::JobCancel { .. } => {
            blocks::job(&decode(data)?, zone)
        }
        Request::Log { .. } => tables::activity(&decode::<Vec<_>>(data)?, zone),
        Request::Verify { .. } => {
            let mut text = blocks::counters(data);
            for problem in decode::<VerifyProblems>(data)?.problems {
                text.push_str(&format!("problem: {problem}\n"));
            }
            text
        }
        Request::Prune { .. } => blocks::prune(data),
        Request::CatalogRebuild => blocks::counters(data),
    })
}

/// A job queued without `--wait`, and how to follow it.
fn queued(what: &str, job: &JobRecord) -> String {
    format!(
        "queued {what} {id}; follow it with: envsnapctl job watch {id}\n",
        id = job.id
    )
}

/// A link: the URL on its first line, then what it is and when it expires.
fn link(data: &serde_json::Value, zone: &impl Zone) -> String {
    let expires = data["expires"]
        .as_str()
        .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
        .map_or_else(String::new, |t| time::block_time(t, zone));
    format!(
        "{}\nexpires {expires}; part {} of backup {} ({}, {})\n",
        data["url"].as_str().unwrap_or_default(),
        data["part"].as_str().unwrap_or_default(),
        data["backup"].as_str().unwrap_or_default(),
        data["format"].as_str().unwrap_or_default(),
        text::human_size(data["bytes"].as_u64().unwrap_or_default()),
    )
}

/// Whether the exit status depends on the result's content.
fn needs_status_check(request: &Request) -> bool {
    matches!(request, Request::Verify { .. } | Request::JobWatch { .. })
}

/// Whether a result that arrived is a success for the exit status.
fn result_status(request: &Request, data: &serde_json::Value) -> Result<(), CliError> {
    match request {
        Request::Verify { .. } => match decode::<VerifyProblems>(data)?.problems.len() {
            0 => Ok(()),
            count => Err(CliError::VerifyProblems(count)),
        },
        Request::JobWatch { .. } => {
            let job: JobRecord = decode(data)?;
            match job.state {
                JobState::Failed | JobState::Cancelled => Err(CliError::JobUnsuccessful {
                    id: job.id,
                    state: job.state.to_string(),
                    error: job.error,
                }),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

fn decode<T: DeserializeOwned>(data: &serde_json::Value) -> Result<T, serde_json::Error> {
    T::deserialize(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;

    fn job(state: &str, error: Option<&str>) -> serde_json::Value {
        json!({ "id": 12, "kind": "backup", "env": "live", "state": state, "user": "ann", "backup": null,
                "error": error, "created": "2026-11-24T03:00:00Z", "started": null, "finished": null })
    }

    #[test]
    fn verify_problems_fail_after_printing() {
        let request = Request::Verify {
            env: "live".into(),
            backup: None,
            read_data: true,
        };
        let data = json!({ "backups": 1, "chunks_referenced": 5, "packs_read": 1, "bytes_read": 10,
                           "problems": ["pack 1f missing", "chunk 2a bad"] });
        let text = render(&request, &data, &Utc).unwrap();
        assert!(
            text.ends_with("problem: pack 1f missing\nproblem: chunk 2a bad\n"),
            "{text}"
        );
        assert_eq!(
            result_status(&request, &data).unwrap_err().to_string(),
            "verify found 2 problems"
        );
        let clean = json!({ "backups": 1, "chunks_referenced": 5, "packs_read": 1, "bytes_read": 10, "problems": [] });
        assert!(result_status(&request, &clean).is_ok());
    }

    #[test]
    fn watched_job_failure_is_an_error() {
        let request = Request::JobWatch { id: 12 };
        assert!(result_status(&request, &job("succeeded", None)).is_ok());
        let error = result_status(&request, &job("failed", Some("disk full"))).unwrap_err();
        assert_eq!(error.to_string(), "job 12 failed: disk full");
        // Showing a failed job is not itself a failure.
        assert!(result_status(&Request::JobShow { id: 12 }, &job("failed", Some("x"))).is_ok());
    }

    #[test]
    fn queued_backup_tells_how_to_follow() {
        let request = Request::BackupCreate {
            env: "live".into(),
            name: None,
            wait: false,
            keep_until: None,
        };
        let text = render(&request, &job("queued", None), &Utc).unwrap();
        assert_eq!(
            text,
            "queued job 12; follow it with: envsnapctl job watch 12\n"
        );
    }

    #[test]
    fn a_result_of_the_wrong_shape_is_reported() {
        let error = render(&Request::Status, &json!({ "version": 1 }), &Utc).unwrap_err();
        assert!(
            CliError::from(error)
                .to_string()
                .starts_with("envsnapd sent a result this client does not understand")
        );
    }
}
