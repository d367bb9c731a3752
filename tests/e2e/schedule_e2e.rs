//! End to end: cron schedules, catch-up, retention and prune through the real daemon.

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::daemon::{TestDaemon, make_environments, standard_config};

fn start(extra_live: &str, daemon_extra: &str) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    TestDaemon::start_in(dir, |d| {
        standard_config(d, "")
            .replace("max_jobs = 2", &format!("max_jobs = 2\n{daemon_extra}"))
            .replace(
                "[environments.live]\n",
                &format!("[environments.live]\n{extra_live}\n"),
            )
    })
}

fn backups(daemon: &TestDaemon) -> Vec<serde_json::Value> {
    daemon
        .json(&["backup", "list", "live"])
        .as_array()
        .unwrap()
        .clone()
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_schedule_makes_scheduled_backups_and_env_shows_the_next_run() {
    let daemon = start("schedule = [\"*/2 * * * * *\"]", "");
    wait_until("a scheduled backup", || {
        backups(&daemon).iter().any(|b| b["status"] == "completed")
    });
    let backup = backups(&daemon)
        .into_iter()
        .find(|b| b["status"] == "completed")
        .unwrap();
    assert_eq!(backup["trigger"], "scheduled");
    assert!(
        backup["name"].as_str().unwrap().ends_with("-scheduled"),
        "{backup}"
    );
    let env = daemon.json(&["env", "show", "live"]);
    assert!(env["next_run"].is_string(), "{env}");
}

/// Makes the catalog believe the daily schedule last ran two days ago.
fn pretend_last_run_was_days_ago(daemon: &TestDaemon) {
    let two_days_ago = (chrono::Utc::now() - chrono::Duration::days(2)).to_rfc3339();
    let status = Command::new("sqlite3")
        .arg(daemon.path("state/catalog.sqlite"))
        .arg(format!(
            "UPDATE schedule_runs SET last_run = '{two_days_ago}';"
        ))
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_missed_run_is_caught_up_once_and_a_restart_does_not_double_it() {
    let mut daemon = start("schedule = [\"0 3 * * *\"]", "catch_up = true");
    assert!(
        backups(&daemon).is_empty(),
        "a new schedule does not fire for the past"
    );
    assert_eq!(daemon.signal_and_wait(Signal::SIGTERM), Some(0));
    pretend_last_run_was_days_ago(&daemon);
    daemon.spawn();
    wait_until("the catch-up backup", || {
        backups(&daemon).iter().any(|b| b["status"] == "completed")
    });
    assert_eq!(
        backups(&daemon).len(),
        1,
        "one catch-up run for two missed days"
    );
    assert_eq!(daemon.signal_and_wait(Signal::SIGTERM), Some(0));
    daemon.spawn();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(backups(&daemon).len(), 1, "a restart does not run it again");
}

#[test]
fn without_catch_up_a_missed_run_is_skipped() {
    let mut daemon = start("schedule = [\"0 3 * * *\"]", "catch_up = false");
    assert_eq!(daemon.signal_and_wait(Signal::SIGTERM), Some(0));
    pretend_last_run_was_days_ago(&daemon);
    daemon.spawn();
    std::thread::sleep(Duration::from_secs(2));
    assert!(backups(&daemon).is_empty());
    assert!(
        daemon.log().contains("missed run not caught up"),
        "{}",
        daemon.log()
    );
}

#[test]
fn short_retention_prunes_the_old_backup_keeps_the_newest_and_shrinks_the_store() {
    let daemon = start("retention = \"3s\"", "");
    let mut unique = vec![0u8; 4_000_000];
    getrandom::fill(&mut unique).unwrap(); // incompressible: the store holds all of it
    std::fs::write(daemon.path("live/uploads/unique.bin"), &unique).unwrap();
    daemon.json(&["backup", "create", "live", "--name", "old", "--wait"]);
    std::fs::remove_file(daemon.path("live/uploads/unique.bin")).unwrap();
    daemon.json(&["backup", "create", "live", "--name", "new", "--wait"]);
    std::thread::sleep(Duration::from_secs(4));

    let refused = daemon.ctl(&["restore", "live", "old", "--yes"]);
    assert!(
        refused.stderr.contains("expired"),
        "an expired backup cannot be restored: {}",
        refused.stderr
    );

    let before = daemon.pack_bytes();
    let dry = daemon.json(&["prune", "--dry-run"]);
    assert_eq!(dry["pruned"], serde_json::json!(["live/old"]), "{dry}");
    assert_eq!(daemon.pack_bytes(), before, "a dry run deletes nothing");
    let pruned = daemon.json(&["prune"]);
    assert_eq!(
        pruned["pruned"],
        serde_json::json!(["live/old"]),
        "{pruned}"
    );
    let names: Vec<String> = backups(&daemon)
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["new"],
        "the newest backup stays although it expired too"
    );
    let after = daemon.pack_bytes();
    assert!(
        before - after > 3_000_000,
        "the store shrank by the old backup's unique data: {before} -> {after}"
    );
    let log = daemon.json(&["log", "live"]);
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "prune" && e["backup"] == "old")
    );
    let verify = daemon.json(&["verify", "live", "--read-data"]);
    assert_eq!(verify["problems"].as_array().unwrap().len(), 0, "{verify}");
}

#[test]
fn kept_backups_outlive_the_retention() {
    let daemon = start("retention = \"2s\"", "");
    let created = daemon.json(&[
        "backup",
        "create",
        "live",
        "--name",
        "pinned",
        "--wait",
        "--keep-until",
        "30d",
    ]);
    let expires =
        chrono::DateTime::parse_from_rfc3339(created["backup"]["expires"].as_str().unwrap())
            .unwrap();
    assert!(
        expires > chrono::Utc::now() + chrono::Duration::days(29),
        "{created}"
    );
    daemon.json(&["backup", "create", "live", "--name", "plain", "--wait"]);
    daemon.json(&["backup", "create", "live", "--name", "forever", "--wait"]);
    let kept = daemon.json(&["backup", "keep", "live", "forever", "--forever"]);
    assert!(kept["expires"].is_null(), "{kept}");
    daemon.json(&["backup", "create", "live", "--name", "newest", "--wait"]);
    std::thread::sleep(Duration::from_secs(3));
    let pruned = daemon.json(&["prune"]);
    assert_eq!(
        pruned["pruned"],
        serde_json::json!(["live/plain"]),
        "{pruned}"
    );
    let mut names: Vec<String> = backups(&daemon)
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["forever", "newest", "pinned"]);
    let past = daemon.ctl(&["backup", "keep", "live", "pinned", "--until", "2020-01-01"]);
    assert_ne!(
        past.status, 0,
        "an expiry in the past would let prune delete it"
    );
    assert!(past.stderr.contains("is in the past"), "{}", past.stderr);
    let later = daemon.json(&["backup", "keep", "live", "pinned", "--until", "7d"]);
    assert!(later["expires"].is_string(), "{later}");
}

#[test]
fn failure_and_success_hooks_get_the_jobs_facts() {
    let dir = tempfile::tempdir().unwrap();
    let (failed, succeeded) = (
        dir.path().join("failed.txt"),
        dir.path().join("succeeded.txt"),
    );
    let hooks = format!(
        "on_failure = [\"sh -c 'echo $ENVSNAP_ENV $ENVSNAP_BACKUP $ENVSNAP_OUTCOME: $ENVSNAP_ERROR > {}'\"]\n\
         on_success = [\"sh -c 'echo $ENVSNAP_ENV $ENVSNAP_BACKUP $ENVSNAP_OUTCOME > {}'\"]",
        failed.display(),
        succeeded.display()
    );
    make_environments(dir.path());
    let daemon = TestDaemon::start_in(dir, |d| {
        standard_config(d, "").replace("max_jobs = 2", &format!("max_jobs = 2\n{hooks}"))
    });
    daemon.json(&["backup", "create", "live", "--name", "fine", "--wait"]);
    wait_until("the success hook", || succeeded.exists());
    assert_eq!(
        std::fs::read_to_string(&succeeded).unwrap(),
        "live fine succeeded\n"
    );
    std::fs::remove_file(daemon.path("live/data/main.db")).unwrap();
    let _ = daemon.ctl(&["backup", "create", "live", "--name", "broken", "--wait"]);
    wait_until("the failure hook", || failed.exists());
    let text = std::fs::read_to_string(&failed).unwrap();
    assert!(
        text.starts_with("live broken failed: ") && text.contains("main.db"),
        "{text}"
    );
}
