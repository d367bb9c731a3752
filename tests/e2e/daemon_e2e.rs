//! End to end: the real envsnapd and envsnapctl over a real socket in a temp directory.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::daemon::{
    TestDaemon, ensure_user, make_environments, standard_config, start_failing,
};

#[test]
fn backup_create_list_show_and_log() {
    let daemon = TestDaemon::start("");
    let created = daemon.json(&[
        "backup",
        "create",
        "live",
        "--name",
        "before-upgrade",
        "--wait",
    ]);
    let backup = &created["backup"];
    assert_eq!(backup["name"], "before-upgrade");
    assert_eq!(backup["status"], "completed");
    assert_eq!(
        backup["version"], "2.4.1",
        "the version comes from the VERSION file"
    );
    assert_eq!(backup["trigger"], "manual");
    assert_eq!(backup["user"], "root");
    let parts: Vec<&str> = backup["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["part"].as_str().unwrap())
        .collect();
    assert_eq!(parts, ["code", "database:main", "files:uploads"]);
    let uploads = backup["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["part"] == "files:uploads")
        .unwrap();
    assert_eq!(uploads["size"], 50_000, "cache/** is excluded");

    let listed = daemon.json(&["backup", "list", "live"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let shown = daemon.json(&["backup", "show", "live", "before-upgrade"]);
    assert_eq!(shown["name"], "before-upgrade");
    let env = daemon.json(&["env", "show", "live"]);
    assert_eq!(env["status"], "ready");
    assert_eq!(env["last_backup"], "before-upgrade");
    assert_eq!(env["version"], "2.4.1");
    let log = daemon.json(&["log", "live"]);
    let entry = log.as_array().unwrap().last().unwrap();
    assert_eq!(
        (entry["action"].as_str(), entry["outcome"].as_str()),
        (Some("backup"), Some("succeeded"))
    );
    assert_eq!(entry["user"], "root");
    assert_eq!(entry["backup"], "before-upgrade");

    // A generated name, without --wait: the job is queued and finishes.
    let job = daemon.json(&["backup", "create", "live"]);
    assert_eq!(job["kind"], "backup");
    let name = job["backup"].as_str().unwrap().to_owned();
    assert!(
        name.ends_with("-manual") && name.len() == "20261124-030000-manual".len(),
        "{name}"
    );
    let done = daemon.wait_for_job(job["id"].as_i64().unwrap(), &["succeeded", "failed"]);
    assert_eq!(done["state"], "succeeded", "{done}");
    let second = daemon.json(&["backup", "show", "live", &name]);
    let stored: u64 = second["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["stored"].as_u64().unwrap())
        .sum();
    assert!(
        stored < 2000,
        "an unchanged environment stores almost nothing: {stored}"
    );

    // Human output: a table naming the backups.
    let table = daemon.ctl(&["backup", "list", "live"]).ok();
    assert!(
        table.stdout.contains("before-upgrade") && table.stdout.contains(&name),
        "{}",
        table.stdout
    );

    let verify = daemon.json(&["verify", "live", "--read-data"]);
    assert_eq!(verify["problems"].as_array().unwrap().len(), 0, "{verify}");
}

#[test]
fn bad_names_and_unknown_environments_are_refused_at_once() {
    let daemon = TestDaemon::start("");
    daemon.json(&["backup", "create", "live", "--name", "nightly", "--wait"]);
    let jobs_before = daemon.json(&["job", "list"]).as_array().unwrap().len();

    let duplicate = daemon.ctl(&["backup", "create", "live", "--name", "nightly"]);
    assert_ne!(duplicate.status, 0);
    assert_eq!(
        duplicate.stderr.trim(),
        "envsnapctl: a backup named \"nightly\" already exists in environment live"
    );
    let invalid = daemon.ctl(&["backup", "create", "live", "--name", "../etc"]);
    assert_ne!(invalid.status, 0);
    assert!(
        invalid.stderr.contains("invalid backup name \"../etc\""),
        "{}",
        invalid.stderr
    );
    assert_eq!(invalid.stderr.trim().lines().count(), 1);
    let unknown = daemon.ctl(&["backup", "create", "nope"]);
    assert_ne!(unknown.status, 0);
    assert!(
        unknown.stderr.contains("unknown environment \"nope\""),
        "{}",
        unknown.stderr
    );
    let missing = daemon.ctl(&["backup", "show", "live", "never-made"]);
    assert!(
        missing.stderr.contains("has no backup \"never-made\""),
        "{}",
        missing.stderr
    );

    let jobs_after = daemon.json(&["job", "list"]).as_array().unwrap().len();
    assert_eq!(jobs_before, jobs_after, "nothing was queued");
}

#[test]
fn a_failing_part_fails_the_whole_backup_and_lists_nothing() {
    let daemon = TestDaemon::start("");
    std::fs::remove_file(daemon.path("live/data/main.db")).unwrap();
    let failed = daemon.ctl(&["backup", "create", "live", "--name", "doomed", "--wait"]);
    assert_ne!(failed.status, 0);
    assert!(
        failed.stderr.contains("doomed") && failed.stderr.contains("main.db"),
        "{}",
        failed.stderr
    );
    assert_eq!(
        daemon
            .json(&["backup", "list", "live"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let log = daemon.json(&["log", "live"]);
    assert_eq!(log.as_array().unwrap().last().unwrap()["outcome"], "failed");
    assert_eq!(daemon.json(&["env", "show", "live"])["status"], "ready");
    // The name is free again for a later, successful attempt.
    let job = daemon.json(&["job", "list"]).as_array().unwrap()[0].clone();
    assert_eq!(job["state"], "failed");
    assert!(job["error"].as_str().unwrap().contains("main.db"), "{job}");
}

#[test]
fn delete_removes_a_backup_and_its_data() {
    let daemon = TestDaemon::start("");
    std::fs::write(
        daemon.path("live/uploads/big.bin"),
        (0..3_000_000u64)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    daemon.json(&["backup", "create", "live", "--name", "one", "--wait"]);
    std::fs::remove_file(daemon.path("live/uploads/big.bin")).unwrap();
    daemon.json(&["backup", "create", "live", "--name", "two", "--wait"]);
    let refused = daemon.ctl(&["backup", "delete", "live", "one"]);
    assert_ne!(refused.status, 0, "not on a terminal and without --yes");
    let deleted = daemon.json(&["backup", "delete", "live", "one", "--yes"]);
    assert_eq!(deleted["deleted"], "one");
    assert!(
        deleted["prune"]["bytes_freed"].as_u64().unwrap() > 0,
        "{deleted}"
    );
    let names: Vec<String> = daemon
        .json(&["backup", "list", "live"])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["two"]);
    let verify = daemon.json(&["verify", "live", "--read-data"]);
    assert_eq!(verify["problems"].as_array().unwrap().len(), 0, "{verify}");
    let log = daemon.json(&["log", "live"]);
    assert_eq!(log.as_array().unwrap().last().unwrap()["action"], "delete");
}

fn raw_exchange(daemon: &TestDaemon, bytes: &[u8]) -> String {
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn hostile_bytes_on_the_socket_get_errors_and_the_daemon_keeps_serving() {
    let daemon = TestDaemon::start("");
    // A client that connects and says nothing must not block the others.
    let silent = UnixStream::connect(&daemon.socket).unwrap();
    assert!(
        raw_exchange(&daemon, b"\x00\x01\x02garbage\xff\n").contains("\"code\":\"bad_request\"")
    );
    assert!(
        raw_exchange(&daemon, b"{\"v\":1,\"command\":\"status\"").contains("truncated request")
    );
    assert!(
        raw_exchange(&daemon, b"{\"v\":7,\"command\":\"status\"}\n")
            .contains("\"code\":\"unsupported_version\"")
    );
    assert!(
        raw_exchange(&daemon, b"{\"v\":1,\"command\":\"drop-tables\"}\n")
            .contains("\"code\":\"bad_request\"")
    );
    let huge = vec![b'x'; 3 << 20];
    assert!(raw_exchange(&daemon, &huge).contains("\"code\":\"too_large\""));
    let answer = raw_exchange(&daemon, b"{\"v\":1,\"command\":\"status\"}\n");
    assert!(answer.contains("\"type\":\"result\""), "{answer}");
    drop(silent);
    assert_eq!(daemon.json(&["status"])["host"], "test-host");
}

#[test]
fn reload_refuses_a_broken_config_and_keeps_the_old_one() {
    let daemon = TestDaemon::start("");
    let good = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(
        &daemon.config,
        format!("{good}\n[environments.live.bogus]\nkey = 1\n"),
    )
    .unwrap();
    let refused = daemon.ctl(&["reload"]);
    assert_ne!(refused.status, 0);
    assert!(
        refused.stderr.contains("envsnap.toml") && refused.stderr.contains("bogus"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        daemon.json(&["env", "list"]).as_array().unwrap().len(),
        2,
        "old config still serves"
    );
    // SIGHUP with the broken file: logged, ignored.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.pid()), Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(daemon.log().contains("NOT reloaded"), "{}", daemon.log());
    // A good change is picked up.
    std::fs::write(
        &daemon.config,
        good.replace("[environments.test]", "[environments.staging]"),
    )
    .unwrap();
    assert_eq!(daemon.json(&["reload"])["reloaded"], true);
    let names: Vec<String> = daemon
        .json(&["env", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["live", "staging"]);
}

#[test]
fn config_errors_name_file_key_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[daemon]\nmax_jobs = \"many\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_envsnapd"))
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("broken.toml") && stderr.contains("daemon.max_jobs"),
        "{stderr}"
    );
    let daemon = TestDaemon::start("");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_envsnapd"))
        .arg("--config")
        .arg(&daemon.config)
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A backup that takes a few seconds, so that it can be interrupted.
fn make_slow(daemon: &TestDaemon) {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 400000000 /dev/urandom > {}",
            daemon.path("live/uploads/large.bin").display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
}

/// Starts a slow backup and returns once it has uploaded at least one whole pack
/// (a file still being written, named with `#`, may be empty and does not count).
fn start_and_wait_running(daemon: &TestDaemon, name: &str) -> i64 {
    let whole_packs = || {
        daemon
            .pack_files()
            .iter()
            .filter(|(name, size)| !name.contains('#') && *size > 0)
            .count()
    };
    let packs_before = whole_packs();
    let job = daemon.json(&["backup", "create", "live", "--name", name]);
    let id = job["id"].as_i64().unwrap();
    daemon.wait_for_job(id, &["running"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while whole_packs() <= packs_before {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup never uploaded a pack"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    id
}

#[test]
fn sigterm_during_a_backup_stops_cleanly() {
    let mut daemon = TestDaemon::start("");
    make_slow(&daemon);
    let id = start_and_wait_running(&daemon, "interrupted");
    assert_eq!(
        daemon.signal_and_wait(Signal::SIGTERM),
        Some(0),
        "{}",
        daemon.log()
    );
    daemon.spawn();
    let job = daemon.json(&["job", "show", &id.to_string()]);
    assert_eq!(job["state"], "cancelled", "{job}");
    assert_eq!(
        daemon
            .json(&["backup", "list", "live"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(daemon.json(&["env", "show", "live"])["status"], "ready");
}

#[test]
fn kill_9_during_a_backup_leaves_no_half_backup() {
    let mut daemon = TestDaemon::start("");
    daemon.json(&["backup", "create", "live", "--name", "good", "--wait"]);
    make_slow(&daemon);
    let id = start_and_wait_running(&daemon, "half");
    assert_eq!(daemon.signal_and_wait(Signal::SIGKILL), None);
    let packs_after_crash = daemon.pack_bytes();
    daemon.spawn();
    let job = daemon.json(&["job", "show", &id.to_string()]);
    assert_eq!(job["state"], "failed");
    assert!(
        job["error"].as_str().unwrap().contains("interrupted"),
        "{job}"
    );
    let names: Vec<String> = daemon
        .json(&["backup", "list", "live"])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["good"], "no half backup listed");
    // Prune runs at start-up by itself; an explicit one finds nothing more to do.
    let pruned = daemon.json(&["prune"]);
    assert_eq!(pruned["store"]["packs_deleted"], 0, "{pruned}");
    assert!(
        daemon.pack_bytes() < packs_after_crash,
        "orphaned data reclaimed"
    );
    let leftovers = daemon
        .pack_files()
        .into_iter()
        .map(|(name, _)| name)
        .collect::<Vec<_>>();
    assert!(
        leftovers.iter().all(|n| n.len() == 64 && !n.contains('#')),
        "only whole packs remain: {leftovers:?}"
    );
    let verify = daemon.json(&["verify", "live", "--read-data"]);
    assert_eq!(verify["problems"].as_array().unwrap().len(), 0, "{verify}");
    // The name of the half backup is free again.
    daemon.json(&["backup", "create", "live", "--name", "half", "--wait"]);
}

#[test]
fn job_cancel_stops_a_running_backup() {
    let daemon = TestDaemon::start("");
    make_slow(&daemon);
    let id = start_and_wait_running(&daemon, "cancel-me");
    let cancelled = daemon.json(&["job", "cancel", &id.to_string()]);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert_eq!(
        daemon
            .json(&["backup", "list", "live"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let store_packs = daemon.pack_bytes();
    assert!(
        store_packs < 50_000_000,
        "a cancelled backup reclaims what it wrote: {store_packs} bytes left"
    );
}

#[test]
fn access_rules_apply_to_other_users() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run envsnapctl as another user");
        return;
    }
    let user = "envsnap-e2e";
    let uid = ensure_user(user);
    let daemon = TestDaemon::start(&format!("[access]\nread = [\"user:{user}\"]\n"));
    daemon.open_socket_to_everyone();
    let listed = daemon.ctl_as(Some(uid), &["--json", "env", "list"]);
    assert_eq!(listed.status, 0, "read is allowed: {}", listed.stderr);
    let denied = daemon.ctl_as(Some(uid), &["backup", "create", "live"]);
    assert_ne!(denied.status, 0);
    assert_eq!(
        denied.stderr.trim(),
        format!("envsnapctl: user {user} may not backup on environment live")
    );
    let denied = daemon.ctl_as(Some(uid), &["prune"]);
    assert!(
        denied
            .stderr
            .contains(&format!("user {user} may not restore")),
        "{}",
        denied.stderr
    );
}

#[test]
fn job_watch_follows_a_backup_to_its_end() {
    let daemon = TestDaemon::start("");
    make_slow(&daemon);
    let job = daemon.json(&["backup", "create", "live", "--name", "watched"]);
    let id = job["id"].as_i64().unwrap().to_string();
    let watched = daemon.json(&["job", "watch", &id]);
    assert_eq!(watched["state"], "succeeded", "{watched}");
    assert_eq!(
        daemon.json(&["backup", "show", "live", "watched"])["status"],
        "completed"
    );
}

#[test]
fn catalog_rebuild_recovers_the_backup_list_from_the_store() {
    let mut daemon = TestDaemon::start("");
    daemon.json(&["backup", "create", "live", "--name", "first", "--wait"]);
    daemon.json(&["backup", "create", "test", "--name", "other-env", "--wait"]);
    assert_eq!(daemon.signal_and_wait(Signal::SIGTERM), Some(0));
    for file in ["catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"] {
        let _ = std::fs::remove_file(daemon.path("state").join(file));
    }
    daemon.spawn();
    assert_eq!(
        daemon
            .json(&["backup", "list", "live"])
            .as_array()
            .unwrap()
            .len(),
        0,
        "a new, empty catalog"
    );
    let report = daemon.json(&["catalog", "rebuild"]);
    assert_eq!(report["backups"], 2, "{report}");
    let live = daemon.json(&["backup", "list", "live"]);
    assert_eq!(live.as_array().unwrap()[0]["name"], "first");
    assert_eq!(live.as_array().unwrap()[0]["version"], "2.4.1");
    assert_eq!(
        daemon.json(&["backup", "list", "test"]).as_array().unwrap()[0]["name"],
        "other-env"
    );
    let verify = daemon.json(&["verify", "live", "--read-data"]);
    assert_eq!(verify["problems"].as_array().unwrap().len(), 0, "{verify}");
}

#[test]
fn many_clients_are_served_at_once() {
    let daemon = TestDaemon::start("");
    let socket = daemon.socket.clone();
    let clients: Vec<_> = (0..24)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_envsnapctl"))
                    .arg("--socket")
                    .arg(&socket)
                    .args(["--json", "env", "list"])
                    .output()
                    .unwrap();
                out.status.success()
            })
        })
        .collect();
    assert!(clients.into_iter().all(|c| c.join().unwrap()));
}

#[test]
fn restoring_another_environments_backup_needs_download_rights_there() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run envsnapctl as another user");
        return;
    }
    let user = "envsnap-e2e";
    let uid = ensure_user(user);
    let daemon = TestDaemon::start(&format!(
        "[access]\nread = [\"user:{user}\"]\nrestore = [\"user:{user}\"]\n"
    ));
    daemon.open_socket_to_everyone();
    daemon.json(&["backup", "create", "live", "--name", "prod", "--wait"]);
    let denied = daemon.ctl_as(
        Some(uid),
        &["restore", "test", "prod", "--from", "live", "--yes"],
    );
    assert_ne!(denied.status, 0);
    assert_eq!(
        denied.stderr.trim(),
        format!(
            "envsnapctl: user {user} may not download on environment live, so may not restore its backups"
        )
    );
    // Jobs and log entries of environments the user may not read are not shown either way.
    assert_eq!(
        daemon.ctl_as(Some(uid), &["--json", "job", "list"]).status,
        0
    );
}

#[test]
fn an_unusable_store_stops_the_daemon_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    let config = dir.path().join("envsnap.toml");
    let text = standard_config(dir.path(), "").replace(
        &format!("url = \"file://{}/store\"", dir.path().display()),
        "url = \"file:///dev/null/store\"",
    );
    std::fs::write(&config, text).unwrap();
    let stderr = start_failing(&config);
    assert!(
        stderr.starts_with("envsnapd: store file:///dev/null/store:"),
        "{stderr}"
    );
}

/// An unmounted backup disk: the local store's directory disappears under a running
/// daemon. Backups fail saying so and create nothing at its path; a restart refuses
/// to start rather than make a new, empty repository there.
#[test]
fn a_store_that_disappears_is_an_error_never_a_new_empty_repository() {
    let mut daemon = TestDaemon::start("");
    daemon
        .ctl(&["backup", "create", "live", "--name", "first", "--wait"])
        .ok();
    let store = daemon.path("store");
    // Renamed away in one step, as an unmount would: the prune that follows the
    // first backup may still be writing, which makes removing it in place racy.
    std::fs::rename(&store, daemon.path("unmounted")).unwrap();
    let failed = daemon.ctl(&["backup", "create", "live", "--name", "second", "--wait"]);
    assert_ne!(failed.status, 0);
    assert!(
        failed
            .stderr
            .contains("lost its repository (no config object): is it mounted?"),
        "{}",
        failed.stderr
    );
    let config = store.join("test-host/config");
    assert!(!config.exists(), "a new repository was made");
    daemon.signal_and_wait(Signal::SIGTERM);
    let refused = start_failing(&daemon.path("envsnap.toml"));
    assert!(
        refused.contains("lost its repository (no config object): is it mounted?"),
        "{refused}"
    );
    assert!(!config.exists(), "a new repository was made");
}

/// What an interrupted restore leaves inside an environment (a staged database file
/// beside the database, a staging directory at the top of a tree) is removed at
/// start-up, and a staged file is never backed up, wherever it lies.
#[test]
fn restore_leftovers_are_removed_at_start_up_and_never_backed_up() {
    use std::os::unix::fs::PermissionsExt;
    let mut daemon = TestDaemon::start("");
    let staged_db = daemon.path("live/data/.envsnap-replace-main.db-0123456789abcdef");
    let stage = daemon.path("live/app/.envsnap-restore-0123456789ab");
    let deep = daemon.path("live/uploads/.envsnap-replace-photo.jpg-00ff00ff00ff00ff");
    std::fs::write(&staged_db, b"half a database").unwrap();
    // A stage is our own 0700 directory, with a tree inside; a look-alike of
    // another mode is someone else's and stays.
    std::fs::create_dir_all(stage.join("sub/deeper")).unwrap();
    std::fs::write(stage.join("sub/deeper/file"), b"half restored").unwrap();
    std::fs::set_permissions(&stage, std::fs::Permissions::from_mode(0o700)).unwrap();
    let look_alike = daemon.path("live/app/.envsnap-restore-not-ours");
    std::fs::create_dir_all(&look_alike).unwrap();
    std::fs::set_permissions(&look_alike, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(&deep, b"staged").unwrap();
    daemon
        .ctl(&["backup", "create", "live", "--name", "b1", "--wait"])
        .ok();
    let tar = daemon.path("uploads.tar");
    daemon
        .ctl(&[
            "backup",
            "download",
            "live",
            "b1",
            "--part",
            "files:uploads",
            "-o",
            tar.to_str().unwrap(),
        ])
        .ok();
    let listed = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("photo.jpg"), "{listed}");
    assert!(!listed.contains(".envsnap-replace-"), "{listed}");
    daemon.signal_and_wait(Signal::SIGTERM);
    daemon.spawn();
    assert!(
        !staged_db.exists(),
        "a staged database file survived a restart"
    );
    assert!(!stage.exists(), "a staging directory survived a restart");
    assert!(look_alike.exists(), "a directory not ours was removed");
    assert!(daemon.path("live/data/main.db").exists());
}

/// One user's idle connections take at most their share: root is still served, and
/// that user is told why they are refused.
#[test]
fn one_users_idle_connections_lock_out_neither_root_nor_others() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let daemon = TestDaemon::start("");
    daemon.open_socket_to_everyone();
    let uid = ensure_user("envsnap-e2e");
    let script = format!(
        "import socket, time\nheld = []\nfor _ in range(40):\n    c = socket.socket(socket.AF_UNIX)\n    c.connect({:?})\n    held.append(c)\nprint('ready', flush=True)\ntime.sleep(20)\n",
        daemon.path("run/envsnapd.sock").display().to_string()
    );
    let mut holder = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .uid(uid)
        .gid(uid)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    daemon.ctl(&["status"]).ok();
    let refused = daemon.ctl_as(Some(uid), &["status"]);
    assert_ne!(refused.status, 0);
    assert!(
        refused
            .stderr
            .contains("this user has 16 connections to envsnapd open already"),
        "{}",
        refused.stderr
    );
    let _ = holder.kill();
    let _ = holder.wait();
}
