//! What must hold once the restarted daemon is quiet, whatever moment the kill hit.
//!
//! Each check adds one line per problem instead of panicking, so that one trial
//! reports everything it found and a long run goes on to the next trial.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ops::{Op, Prepared};
use crate::support::daemon::TestDaemon;

/// The user the daemon queues its own rollbacks as.
const DAEMON_USER: &str = "envsnapd";

/// How far the interrupted operation got, as the restarted daemon tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Killed before the request was taken, or before its job ran.
    NotStarted,
    /// A restore killed before it changed anything.
    Untouched,
    Interrupted,
    /// It had ended before the kill.
    Completed,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::NotStarted => "not-started",
            Outcome::Untouched => "interrupted-before-changes",
            Outcome::Interrupted => "interrupted",
            Outcome::Completed => "completed",
        }
    }
}

/// Runs every check on the restarted `daemon`; returns the outcome and the problems.
pub fn after_restart(
    daemon: &TestDaemon,
    prepared: &Prepared,
    request_ok: bool,
) -> (Outcome, Vec<String>) {
    let mut problems = Vec::new();
    let jobs = wait_quiet(daemon, &mut problems);
    let taken = request_taken(daemon, prepared);
    let outcome = judge_jobs(&jobs, prepared, request_ok, taken, &mut problems);
    let env = daemon.json(&["env", "show", "live"]);
    if env["status"] != "ready" {
        problems.push(format!(
            "environment live is {} ({})",
            env["status"], env["last_error"]
        ));
    }
    check_environment(daemon, prepared, outcome, &mut problems);
    check_app(daemon, &mut problems);
    check_prune_is_idle(daemon, &mut problems);
    check_backups(daemon, prepared, outcome, &mut problems);
    check_leftovers(daemon, &mut problems);
    if daemon.log().contains("panicked") {
        problems.push("the daemon's log shows a panic".to_owned());
    }
    (outcome, problems)
}

/// Waits until no job is queued or running (a rollback may be queued at start-up);
/// returns the jobs.
fn wait_quiet(daemon: &TestDaemon, problems: &mut Vec<String>) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let jobs = daemon.json(&["job", "list"]).as_array().unwrap().clone();
        let busy = jobs
            .iter()
            .filter(|j| j["state"] == "queued" || j["state"] == "running")
            .count();
        if busy == 0 {
            return jobs;
        }
        if Instant::now() > deadline {
            problems.push(format!("{busy} jobs still queued or running after 120 s"));
            return jobs;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the killed daemon had taken the operation's request (its log says so).
fn request_taken(daemon: &TestDaemon, prepared: &Prepared) -> bool {
    let log = daemon.log();
    let command = format!("\"{}\"", prepared.op.command());
    log.get(prepared.log_offset..)
        .unwrap_or("")
        .lines()
        .any(|line| line.contains(" request ") && line.contains(&command))
}

/// The operation's own job, and what else the restart ran (at most a rollback).
fn judge_jobs(
    jobs: &[Value],
    prepared: &Prepared,
    request_ok: bool,
    taken: bool,
    problems: &mut Vec<String>,
) -> Outcome {
    let mut new: Vec<&Value> = jobs
        .iter()
        .filter(|j| j["id"].as_i64().unwrap() > prepared.last_job)
        .collect();
    new.sort_by_key(|j| j["id"].as_i64());
    let own_index = new.iter().position(|j| {
        Some(j["kind"].as_str().unwrap()) == prepared.op.job_kind() && j["user"] == "root"
    });
    let outcome = match (prepared.op.job_kind(), own_index) {
        (None, _) if request_ok => Outcome::Completed,
        (None, _) if taken => Outcome::Interrupted,
        (None, _) => Outcome::NotStarted,
        (Some(_), None) => {
            if request_ok {
                problems.push("envsnapctl queued a job the restarted daemon does not list".into());
            }
            Outcome::NotStarted
        }
        (Some(_), Some(i)) => judge_own_job(new.remove(i), problems),
    };
    let mut rollbacks = 0;
    for job in new {
        if job["kind"] != "restore" || job["user"] != DAEMON_USER {
            problems.push(format!("an unexpected job ran after the restart: {job}"));
        } else if job["state"] != "succeeded" {
            problems.push(format!("the rollback failed: {job}"));
        } else {
            rollbacks += 1;
        }
    }
    let want = usize::from(prepared.op == Op::Restore && outcome == Outcome::Interrupted);
    if rollbacks != want {
        problems.push(format!(
            "{rollbacks} rollback jobs after a {} {}, not {want}",
            outcome.label(),
            prepared.op
        ));
    }
    outcome
}

fn judge_own_job(job: &Value, problems: &mut Vec<String>) -> Outcome {
    let error = job["error"].as_str().unwrap_or("");
    match job["state"].as_str().unwrap() {
        "succeeded" => Outcome::Completed,
        "failed" if error.contains("interrupted before anything changed") => Outcome::Untouched,
        // Queued by the killed daemon, run by the new one without the files the
        // client had passed (docs/restore.md, Import).
        "failed" if error.contains("files were lost when the daemon restarted") => {
            Outcome::NotStarted
        }
        "failed" if error.contains("interrupted") => Outcome::Interrupted,
        _ => {
            problems.push(format!(
                "the operation's job did not end as a crash explains: {job}"
            ));
            Outcome::Interrupted
        }
    }
}

/// Untouched, or for a restore exactly the backup's state (when it completed) or
/// the state before it (anything else: nothing changed, or rolled back).
fn check_environment(
    daemon: &TestDaemon,
    prepared: &Prepared,
    outcome: Outcome,
    problems: &mut Vec<String>,
) {
    let now = super::state::EnvState::of(daemon.dir.path());
    let (want, other, names) = match (&prepared.restored, outcome) {
        (Some(restored), Outcome::Completed) => (
            restored,
            Some(&prepared.before),
            ["the restored backup", "the state before"],
        ),
        (restored, _) => (
            &prepared.before,
            restored.as_ref(),
            ["the state before", "the restored backup"],
        ),
    };
    let differences = want.differences(&now, 5);
    if differences.is_empty() {
        return;
    }
    let instead = match other.map(|o| o.differences(&now, 1).is_empty()) {
        Some(true) => format!(", but {}", names[1]),
        Some(false) => format!(", nor {}", names[1]),
        None => String::new(),
    };
    problems.push(format!(
        "the environment is not {}{instead}: {}",
        names[0],
        differences.join("; ")
    ));
}

/// The app runs, and its last hook (if any ran) was its check.
fn check_app(daemon: &TestDaemon, problems: &mut Vec<String>) {
    let state = std::fs::read_to_string(daemon.path("app.state")).unwrap_or_default();
    if state.trim() != "running" {
        problems.push(format!("the app is left {:?}", state.trim()));
    }
    let hooks = std::fs::read_to_string(daemon.path("hooks.log")).unwrap_or_default();
    if let Some(last) = hooks.lines().last()
        && last != "check"
    {
        problems.push(format!("the last app hook was {last}, not check"));
    }
}

/// A prune, then a second one that must find nothing at all to do (the first may
/// race the start-up prune).
fn check_prune_is_idle(daemon: &TestDaemon, problems: &mut Vec<String>) {
    for round in ["first", "second"] {
        let out = daemon.ctl(&["--json", "prune"]);
        if out.status != 0 {
            problems.push(format!("the {round} prune failed: {}", out.stderr.trim()));
            return;
        }
        let report = out.json();
        if round == "first" {
            continue;
        }
        let store = &report["store"];
        let busy = [
            "manifests_deleted",
            "packs_deleted",
            "packs_repacked",
            "packs_written",
            "packs_kept_for_running_writers",
            "bytes_freed",
        ]
        .into_iter()
        .any(|field| store[field] != 0);
        if busy || report["pruned"] != serde_json::json!([]) {
            problems.push(format!("a second prune still found work: {report}"));
        }
    }
}

/// Every listed backup is complete and verifies with its data read; the operation's
/// backup is listed exactly when the operation says so.
fn check_backups(
    daemon: &TestDaemon,
    prepared: &Prepared,
    outcome: Outcome,
    problems: &mut Vec<String>,
) {
    let listed = daemon.json(&["backup", "list", "live"]);
    let listed = listed.as_array().unwrap();
    for backup in listed.iter().filter(|b| b["status"] != "completed") {
        problems.push(format!(
            "backup {} is listed {}",
            backup["name"], backup["status"]
        ));
    }
    let completed = outcome == Outcome::Completed;
    if let Some(name) = &prepared.backup {
        let is_listed = listed.iter().any(|b| b["name"] == name.as_str());
        let should = match prepared.op {
            Op::Backup | Op::Import => Some(completed),
            // An expired backup goes at the latest with the start-up prune.
            Op::Prune => Some(false),
            Op::Delete if completed => Some(false),
            Op::Delete | Op::Restore => None,
        };
        if should.is_some_and(|should| should != is_listed) {
            problems.push(format!(
                "backup {name} is {}listed after a {} {}",
                if is_listed { "" } else { "not " },
                outcome.label(),
                prepared.op
            ));
        }
    }
    let verify = daemon.ctl(&["--json", "verify", "live", "--read-data"]);
    if verify.status != 0 {
        problems.push(format!(
            "verify --read-data failed: {}",
            verify.stderr.trim()
        ));
    } else if verify.json()["problems"] != serde_json::json!([]) {
        problems.push(format!(
            "verify --read-data found problems: {}",
            verify.stdout.trim()
        ));
    }
}

/// No temporary file anywhere: restore staging in the environment, half-written
/// objects and stale locks in the store, scratch and sandboxes in the state dir.
fn check_leftovers(daemon: &TestDaemon, problems: &mut Vec<String>) {
    let partial = |name: &str| {
        name.rsplit_once('#')
            .is_some_and(|(_, tail)| !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()))
    };
    let found = [
        (
            "in the environment",
            names_under(&daemon.path("live"), &|n| n.starts_with(".envsnap-")),
        ),
        (
            "half-written in the store",
            names_under(&daemon.path("store"), &partial),
        ),
        (
            "lock objects in the store",
            names_under(&daemon.path("store/test-host/locks"), &|n| !partial(n)),
        ),
        (
            "in the state dir's tmp/",
            names_under(&daemon.path("state/tmp"), &|_| true),
        ),
        (
            "in the state dir's drills/",
            names_under(&daemon.path("state/drills"), &|_| true),
        ),
    ];
    for (place, names) in found {
        if !names.is_empty() {
            problems.push(format!("left {place}: {names:?}"));
        }
    }
}

/// Paths under `root` (at any depth) whose file name matches.
fn names_under(root: &Path, matches: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if matches(&name) {
                found.push(entry.path().display().to_string());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(entry.path());
            }
        }
    }
    found.sort();
    found
}
