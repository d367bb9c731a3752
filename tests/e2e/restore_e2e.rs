//! End to end: restoring environments through the real envsnapd and envsnapctl.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::daemon::{TestDaemon, make_environments, standard_config, standard_config_on};
use crate::support::repo::assert_same_tree;

/// The `live` environment's app commands append their name to `hooks.log`.
fn hooks(dir: &Path, stop: &str, start: &str, check: &str) -> String {
    let log = dir.join("hooks.log");
    let cmd = |what: &str, tail: &str| format!("sh -c 'echo {what} >> {}{tail}'", log.display());
    format!(
        "[environments.live.app]\nstop = [\"{}\"]\nstart = [\"{}\"]\ncheck = [\"{}\"]\n",
        cmd("stop", stop),
        cmd("start", start),
        cmd("check", check)
    )
}

fn start_live(stop: &str, start: &str, check: &str) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    let extra = hooks(dir.path(), stop, start, check);
    TestDaemon::start_in(dir, |d| standard_config(d, &extra))
}

fn hook_calls(daemon: &TestDaemon) -> Vec<String> {
    std::fs::read_to_string(daemon.path("hooks.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn sqlite_rows(db: &Path) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg("SELECT id, v FROM t ORDER BY id")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A copy (`cp -a`) of the `live` environment's files, as `name` in the daemon's directory.
pub(super) fn snapshot(daemon: &TestDaemon, name: &str) -> std::path::PathBuf {
    let copy = daemon.path(name);
    let status = Command::new("cp")
        .arg("-a")
        .arg(daemon.path("live"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    copy
}

/// Changes every part of `live`: code, uploads (one file changed, one added, one removed) and rows.
pub(super) fn drift(daemon: &TestDaemon) {
    std::fs::write(daemon.path("live/app/index.php"), "<?php echo 'changed';\n").unwrap();
    std::fs::write(daemon.path("live/app/new.php"), "new").unwrap();
    std::fs::remove_file(daemon.path("live/app/src/lib.php")).unwrap();
    std::fs::write(daemon.path("live/uploads/photo.jpg"), b"overwritten").unwrap();
    let out = Command::new("sqlite3")
        .arg(daemon.path("live/data/main.db"))
        .arg("PRAGMA journal_mode=WAL; DELETE FROM t WHERE id = 1; INSERT INTO t(v) VALUES ('later');")
        .output()
        .unwrap();
    assert!(out.status.success());
}

/// Asserts `live` holds what `copy` (a [`snapshot`]) does: the same trees and rows.
pub(super) fn assert_live_equals(daemon: &TestDaemon, copy: &Path) {
    for part in ["app", "uploads"] {
        assert_same_tree(&copy.join(part), &daemon.path("live").join(part));
    }
    assert_eq!(
        sqlite_rows(&daemon.path("live/data/main.db")),
        sqlite_rows(&copy.join("data/main.db"))
    );
}

#[test]
fn restore_replaces_every_part_in_order_with_a_safety_backup() {
    let daemon = start_live("", "", "");
    daemon.json(&["backup", "create", "live", "--name", "good", "--wait"]);
    let good = snapshot(&daemon, "good-copy");
    drift(&daemon);
    let drifted = snapshot(&daemon, "drifted-copy");

    let dry = daemon.json(&["restore", "live", "good", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    let code = dry["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["part"] == "code")
        .unwrap();
    assert_eq!(code["plan"]["files_to_write"], 2, "{dry}");
    assert_eq!(code["plan"]["paths_to_remove"], 1, "{dry}");
    assert_live_equals(&daemon, &drifted); // the dry run changed nothing
    assert!(hook_calls(&daemon).is_empty());

    let refused = daemon.ctl(&["restore", "live", "good"]);
    assert_ne!(refused.status, 0, "without --yes and without a terminal");
    assert!(refused.stderr.contains("pass --yes"), "{}", refused.stderr);

    let job = daemon.json(&["restore", "live", "good", "--yes", "--wait"]);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_live_equals(&daemon, &good);
    assert_eq!(hook_calls(&daemon), ["stop", "start", "check"]);
    let env = daemon.json(&["env", "show", "live"]);
    assert_eq!(env["status"], "ready");
    let safety = env["safety_backup"].as_str().unwrap().to_owned();
    let safety_backup = daemon.json(&["backup", "show", "live", &safety]);
    assert_eq!(safety_backup["trigger"], "pre-restore");

    let log = daemon.json(&["log", "live"]);
    let restores: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "restore")
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(restores, ["requested", "succeeded"]);

    // The safety backup brings the drifted state back.
    daemon.json(&["restore", "live", &safety, "--yes", "--wait"]);
    assert_live_equals(&daemon, &drifted);
}

#[test]
fn a_version_mismatch_is_refused_and_changes_nothing() {
    let daemon = start_live("", "", "");
    daemon.json(&["backup", "create", "live", "--name", "old", "--wait"]);
    std::fs::write(daemon.path("live/VERSION"), "2.5.0\n").unwrap();
    drift(&daemon);
    let drifted = snapshot(&daemon, "drifted-copy");
    let jobs = daemon.json(&["job", "list"]).as_array().unwrap().len();
    let refused = daemon.ctl(&["restore", "live", "old", "--yes"]);
    assert_ne!(refused.status, 0);
    assert_eq!(
        refused.stderr.trim(),
        "envsnapctl: backup old has version 2.4.1 but environment live is at version 2.5.0: \
         update the environment to version 2.4.1 first, then restore"
    );
    assert_live_equals(&daemon, &drifted);
    assert_eq!(
        daemon.json(&["job", "list"]).as_array().unwrap().len(),
        jobs,
        "nothing queued"
    );
    assert!(hook_calls(&daemon).is_empty());
}

#[test]
fn a_second_restore_is_refused_while_one_runs() {
    let daemon = start_live("; sleep 3", "", "");
    daemon.json(&["backup", "create", "live", "--name", "b", "--wait"]);
    let first = daemon.json(&["restore", "live", "b", "--yes"]);
    let refused = daemon.ctl(&["restore", "live", "b", "--yes"]);
    assert_ne!(refused.status, 0);
    let id = first["id"].as_i64().unwrap();
    assert!(
        refused.stderr.contains(&format!("restore job {id}")),
        "{}",
        refused.stderr
    );
    assert_eq!(
        daemon.wait_for_job(id, &["succeeded", "failed"])["state"],
        "succeeded"
    );
}

fn failing_step_rolls_back(stop: &str, start: &str, check: &str, failed_step: &str) {
    let daemon = start_live(stop, start, check);
    daemon.json(&["backup", "create", "live", "--name", "target", "--wait"]);
    drift(&daemon);
    let drifted = snapshot(&daemon, "drifted-copy");
    let failed = daemon.ctl(&["restore", "live", "target", "--yes", "--wait"]);
    assert_ne!(failed.status, 0);
    assert!(
        failed.stderr.contains(&format!("{failed_step} failed")),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("rolled back to"),
        "{}",
        failed.stderr
    );
    assert_live_equals(&daemon, &drifted);
    let env = daemon.json(&["env", "show", "live"]);
    assert_eq!(env["status"], "update-failed");
    assert!(
        env["last_error"].as_str().unwrap().contains(failed_step),
        "{env}"
    );
    let log = daemon.json(&["log", "live"]);
    let rollback = log
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "rollback")
        .expect("rollback logged");
    assert_eq!(rollback["outcome"], "succeeded");
}

#[test]
fn a_failing_check_rolls_back() {
    failing_step_rolls_back("", "", "; exit 1", "app.check");
}

#[test]
fn a_failing_start_rolls_back_and_a_later_restore_clears_the_failure() {
    // start fails once (the restore), then works (the rollback's start, later ones).
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    let marker = dir.path().join("start-failed-once");
    let start_tail = format!(
        "; if [ ! -e {m} ]; then touch {m}; exit 1; fi",
        m = marker.display()
    );
    let extra = hooks(dir.path(), "", &start_tail, "");
    let daemon = TestDaemon::start_in(dir, |d| standard_config(d, &extra));
    daemon.json(&["backup", "create", "live", "--name", "target", "--wait"]);
    drift(&daemon);
    let drifted = snapshot(&daemon, "drifted-copy");
    let failed = daemon.ctl(&["restore", "live", "target", "--yes", "--wait"]);
    assert!(
        failed.stderr.contains("app.start failed") && failed.stderr.contains("rolled back"),
        "{}",
        failed.stderr
    );
    assert_live_equals(&daemon, &drifted);
    assert_eq!(
        daemon.json(&["env", "show", "live"])["status"],
        "update-failed"
    );
    // Now start works: a restore succeeds and clears the failure.
    daemon.json(&["restore", "live", "target", "--yes", "--wait"]);
    let env = daemon.json(&["env", "show", "live"]);
    assert_eq!(env["status"], "ready");
    assert!(env["last_error"].is_null(), "{env}");
}

/// Kills the daemon while `app.start` runs, every part already replaced by backup
/// `target`, then restarts it with a quick `app.start` and `extra` in its config.
/// Returns the daemon, the restore's job id and a copy of the environment as it was
/// before the restore.
fn kill_9_mid_restore(extra: &str) -> (TestDaemon, i64, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    let config = format!("{}{extra}", hooks(dir.path(), "", "; sleep 30", ""));
    let mut daemon = TestDaemon::start_in(dir, |d| standard_config(d, &config));
    daemon.json(&["backup", "create", "live", "--name", "target", "--wait"]);
    drift(&daemon);
    let drifted = snapshot(&daemon, "drifted-copy");
    let job = daemon.json(&["restore", "live", "target", "--yes"]);
    let id = job["id"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !hook_calls(&daemon).contains(&"start".to_owned()) {
        assert!(std::time::Instant::now() < deadline, "app.start never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(daemon.signal_and_wait(Signal::SIGKILL), None);
    let config = std::fs::read_to_string(&daemon.config)
        .unwrap()
        .replace("; sleep 30", "");
    std::fs::write(&daemon.config, config).unwrap();
    std::fs::remove_file(daemon.path("hooks.log")).unwrap();
    daemon.spawn();
    (daemon, id, drifted)
}

#[test]
fn kill_9_during_a_restore_rolls_back_at_start_up() {
    let (daemon, id, drifted) = kill_9_mid_restore("");
    let job = daemon.json(&["job", "show", &id.to_string()]);
    assert_eq!(job["state"], "failed");
    let jobs = daemon.json(&["job", "list"]);
    let rollback = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["user"] == "envsnapd")
        .unwrap_or_else(|| panic!("no rollback queued: {jobs}"));
    assert_eq!(rollback["kind"], "restore", "{rollback}");
    let safety = rollback["backup"].as_str().unwrap().to_owned();
    assert!(safety.ends_with("-pre-restore"), "{rollback}");
    let done = daemon.wait_for_job(
        rollback["id"].as_i64().unwrap(),
        &["succeeded", "failed", "cancelled"],
    );
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_live_equals(&daemon, &drifted);
    assert_eq!(hook_calls(&daemon), ["stop", "start", "check"]);
    let env = daemon.json(&["env", "show", "live"]);
    assert_eq!(env["status"], "ready", "{env}");
    assert!(env["last_error"].is_null(), "{env}");
    let log = daemon.json(&["log", "live"]);
    let last = log.as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&last["action"], &last["outcome"], &last["backup"]),
        (&"rollback".into(), &"succeeded".into(), &safety.into()),
        "{log}"
    );
}

#[test]
fn with_on_interrupt_leave_a_killed_restore_waits_for_a_person() {
    let (daemon, id, drifted) = kill_9_mid_restore("[restore]\non_interrupt = \"leave\"\n");
    let job = daemon.json(&["job", "show", &id.to_string()]);
    assert_eq!(job["state"], "failed");
    let jobs = daemon.json(&["job", "list"]);
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .all(|j| j["user"] != "envsnapd"),
        "{jobs}"
    );
    assert!(hook_calls(&daemon).is_empty(), "the app was left alone");
    let env = daemon.json(&["env", "show", "live"]);
    assert_eq!(env["status"], "update-failed");
    let safety = env["safety_backup"].as_str().unwrap().to_owned();
    assert!(
        env["last_error"]
            .as_str()
            .unwrap()
            .contains(&format!("envsnapctl restore live {safety} --yes")),
        "{env}"
    );
    daemon.json(&["restore", "live", &safety, "--yes", "--wait"]);
    assert_live_equals(&daemon, &drifted);
    assert_eq!(daemon.json(&["env", "show", "live"])["status"], "ready");
}

#[test]
fn restore_from_another_environment_maps_parts() {
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    for sub in ["stage/app", "stage/media", "stage/data"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let extra = format!(
        "[environments.stage]\nversion = \"2.4.1\"\ncode = \"{d}/stage/app\"\n\
         [environments.stage.mounts.media]\npath = \"{d}/stage/media\"\n\
         [environments.stage.databases.main]\nkind = \"sqlite\"\npath = \"{d}/stage/data/main.db\"\n",
        d = dir.path().display()
    );
    let stage_db = dir.path().join("stage/data/main.db");
    assert!(
        Command::new("sqlite3")
            .arg(&stage_db)
            .arg("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);")
            .status()
            .unwrap()
            .success()
    );
    let daemon = TestDaemon::start_in(dir, |d| standard_config(d, &extra));
    daemon.json(&["backup", "create", "live", "--name", "prod", "--wait"]);
    let unmapped = daemon.ctl(&["restore", "stage", "prod", "--from", "live", "--yes"]);
    assert_ne!(unmapped.status, 0);
    assert!(
        unmapped
            .stderr
            .contains("files:uploads has no counterpart in environment stage"),
        "{}",
        unmapped.stderr
    );
    let job = daemon.json(&[
        "restore",
        "stage",
        "prod",
        "--from",
        "live",
        "--map",
        "files:uploads=files:media",
        "--yes",
        "--wait",
    ]);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_same_tree(&daemon.path("live/app"), &daemon.path("stage/app"));
    // The mount's excluded cache/ is neither restored nor anything the target loses.
    assert_eq!(
        std::fs::read(daemon.path("stage/media/photo.jpg")).unwrap(),
        vec![7u8; 50_000]
    );
    assert!(!daemon.path("stage/media/cache/tmp.bin").exists());
    assert_eq!(
        sqlite_rows(&daemon.path("stage/data/main.db")),
        sqlite_rows(&daemon.path("live/data/main.db"))
    );
}

#[test]
fn restore_from_another_host_through_a_shared_store() {
    let shared = tempfile::tempdir().unwrap();
    let store = shared.path().join("store");
    let config_for = |host: &'static str, store: std::path::PathBuf| {
        move |d: &Path| {
            standard_config_on(d, &format!("file://{}", store.display()), "")
                .replace("host = \"test-host\"", &format!("host = \"{host}\""))
        }
    };
    let dir_a = tempfile::tempdir().unwrap();
    make_environments(dir_a.path());
    let a = TestDaemon::start_in(dir_a, config_for("host-a", store.clone()));
    a.json(&["backup", "create", "live", "--name", "from-a", "--wait"]);

    let dir_b = tempfile::tempdir().unwrap();
    make_environments(dir_b.path());
    std::fs::write(dir_b.path().join("live/app/index.php"), "host b's own code").unwrap();
    let b = TestDaemon::start_in(dir_b, config_for("host-b", store));
    let missing = b.ctl(&["restore", "live", "from-a", "--yes"]);
    assert!(
        missing.stderr.contains("has no backup \"from-a\""),
        "{}",
        missing.stderr
    );
    let job = b.json(&[
        "restore",
        "live",
        "from-a",
        "--from",
        "host-a/live",
        "--yes",
        "--wait",
    ]);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_same_tree(&a.path("live/app"), &b.path("live/app"));
    assert_eq!(
        sqlite_rows(&b.path("live/data/main.db")),
        sqlite_rows(&a.path("live/data/main.db"))
    );
    // Host a's backups are untouched and still verify.
    let verify = a.json(&["verify", "live", "--read-data"]);
    assert_eq!(verify["problems"].as_array().unwrap().len(), 0, "{verify}");
}

/// `live` with a second mount, its database's directory without the database; and
/// `copy` with the same parts under `copy/` (the database's file at `db_path`).
fn live_and_copy(dir: &Path, db_path: &str) -> String {
    std::fs::write(dir.join("live/data/notes.txt"), "beside the database").unwrap();
    std::fs::create_dir(dir.join("copy")).unwrap();
    format!(
        "[environments.live.mounts.data]\npath = \"{d}/live/data\"\nexclude = [\"main.db\", \"main.db-*\"]\n\
         [environments.copy]\nversion = \"2.4.1\"\ncode = \"{d}/copy/app\"\n\
         [environments.copy.mounts.uploads]\npath = \"{d}/copy/uploads\"\nexclude = [\"cache/**\"]\n\
         [environments.copy.mounts.data]\npath = \"{d}/copy/data\"\nexclude = [\"main.db\", \"main.db-*\"]\n\
         [environments.copy.databases.main]\nkind = \"sqlite\"\npath = \"{d}/{db_path}\"\n",
        d = dir.display()
    )
}

/// `live`'s backup `prod` restored into `copy`.
const RESTORE_COPY: [&str; 8] = [
    "restore",
    "copy",
    "prod",
    "--from",
    "live",
    "--yes",
    "--wait",
    "--no-safety-backup",
];

/// The parts restored, in the order the daemon's log says they finished.
fn parts_restored(daemon: &TestDaemon) -> Vec<String> {
    daemon
        .log()
        .lines()
        .map(without_colors)
        .filter(|line| line.contains("part restored"))
        .filter_map(|line| {
            let (_, rest) = line.split_once("part=")?;
            Some(rest.split_whitespace().next()?.trim_matches('"').to_owned())
        })
        .collect()
}

/// `line` without its terminal color sequences (ESC [ ... m).
fn without_colors(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                chars.by_ref().find(|&c| c == 'm');
            }
            c => out.push(c),
        }
    }
    out
}

/// Trees restore beside the database; a database inside a mount's directory waits for
/// that mount, which so finds its directory empty. Everything lands as backed up, the
/// database (which had no file to replace) with the owner and the read and write bits
/// of its source.
#[test]
fn a_database_inside_a_mount_is_restored_after_that_mount() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    let extra = live_and_copy(dir.path(), "copy/data/main.db");
    let live_db = dir.path().join("live/data/main.db");
    // The execute bits are not restored (the content comes from the store).
    std::fs::set_permissions(&live_db, std::fs::Permissions::from_mode(0o750)).unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&live_db, Some(65534), Some(65534)).unwrap();
    }
    let daemon = TestDaemon::start_in(dir, |d| standard_config(d, &extra));
    daemon.json(&["backup", "create", "live", "--name", "prod", "--wait"]);
    let job = daemon.json(&RESTORE_COPY);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_same_tree(&daemon.path("live/app"), &daemon.path("copy/app"));
    assert_eq!(
        std::fs::read(daemon.path("copy/uploads/photo.jpg")).unwrap(),
        vec![7u8; 50_000]
    );
    assert_eq!(
        std::fs::read_to_string(daemon.path("copy/data/notes.txt")).unwrap(),
        "beside the database"
    );
    assert_eq!(
        sqlite_rows(&daemon.path("copy/data/main.db")),
        sqlite_rows(&daemon.path("live/data/main.db"))
    );
    let (source, restored) = (
        std::fs::metadata(&live_db).unwrap(),
        std::fs::metadata(daemon.path("copy/data/main.db")).unwrap(),
    );
    assert_eq!(restored.mode() & 0o7777, 0o640);
    // Writing the database into the restored directory did not change its time.
    let (live_data, copy_data) = (
        std::fs::metadata(daemon.path("live/data")).unwrap(),
        std::fs::metadata(daemon.path("copy/data")).unwrap(),
    );
    assert_eq!(
        (copy_data.mtime(), copy_data.mtime_nsec()),
        (live_data.mtime(), live_data.mtime_nsec())
    );
    assert_eq!(
        (restored.uid(), restored.gid()),
        (source.uid(), source.gid())
    );
    let order = parts_restored(&daemon);
    assert_eq!(order.len(), 4, "{order:?}");
    let at = |part: &str| order.iter().position(|p| p == part).unwrap();
    assert!(at("files:data") < at("database:main"), "{order:?}");
}

/// A database part that fails stops the restore: no tree starts after it, a tree
/// restoring beside it is finished, so each tree is either whole or not there, and
/// nothing staged is left behind.
#[test]
fn a_failing_database_part_leaves_every_tree_whole_or_untouched() {
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    // The database's directory is a file: its restore fails at once.
    let extra = live_and_copy(dir.path(), "copy/not-a-dir/main.db");
    std::fs::write(dir.path().join("copy/not-a-dir"), "a file").unwrap();
    let daemon = TestDaemon::start_in(dir, |d| standard_config(d, &extra));
    daemon.json(&["backup", "create", "live", "--name", "prod", "--wait"]);
    let failed = daemon.ctl(&RESTORE_COPY);
    assert_ne!(failed.status, 0);
    assert!(
        failed.stderr.contains("restoring database:main")
            && failed.stderr.contains("no safety backup to roll back to"),
        "{}",
        failed.stderr
    );
    let copy = daemon.path("copy");
    if copy.join("app").exists() {
        assert_same_tree(&daemon.path("live/app"), &copy.join("app"));
    }
    if copy.join("uploads").exists() {
        let photo = std::fs::read(copy.join("uploads/photo.jpg")).unwrap();
        assert_eq!(photo, vec![7u8; 50_000]);
    }
    if copy.join("data").exists() {
        let notes = std::fs::read_to_string(copy.join("data/notes.txt")).unwrap();
        assert_eq!(notes, "beside the database");
    }
    let mut names: Vec<String> = std::fs::read_dir(daemon.path("copy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names {
        assert!(
            ["app", "data", "not-a-dir", "uploads"].contains(&name.as_str()),
            "left behind in the target: {name} ({names:?})"
        );
    }
    assert_eq!(
        std::fs::read(daemon.path("copy/not-a-dir")).unwrap(),
        b"a file"
    );
}
