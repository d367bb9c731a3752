//! End to end: `store.upload_limit` holds a real backup to its rate, and a reload
//! lifts it from a backup already running.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::daemon::{TestDaemon, make_environments, standard_config};
use crate::support::repo::pseudo_random;

/// The standard config with `limit` as its `[store]` upload limit.
fn limited_config(dir: &Path, limit: &str) -> String {
    let store_line = format!("url = \"file://{}/store\"", dir.display());
    standard_config(dir, "").replace(&store_line, &format!("{store_line}\n{limit}"))
}

#[test]
fn an_upload_limit_holds_a_backup_to_its_rate_and_a_reload_lifts_it() {
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    // 50 MB that neither compress nor deduplicate: 50 MB to upload.
    let big = dir.path().join("live/uploads/big.bin");
    std::fs::write(&big, pseudo_random(50_000_000, 11)).unwrap();
    let daemon = TestDaemon::start_in(dir, |d| limited_config(d, "upload_limit = \"5MiB/s\""));

    let started = Instant::now();
    let done = daemon.json(&["backup", "create", "live", "--name", "limited", "--wait"]);
    let took = started.elapsed();
    assert_eq!(done["job"]["state"], "succeeded", "{done}");
    // 50 MB at 5 MiB/s: 9.5 s.
    assert!(
        (Duration::from_secs(8)..=Duration::from_secs(12)).contains(&took),
        "a 50 MB backup at 5 MiB/s took {took:?}"
    );

    // 50 new MB at 1 MiB/s would take 48 s; lifted after 2 s, it ends soon after.
    std::fs::write(&big, pseudo_random(50_000_000, 12)).unwrap();
    std::fs::write(
        &daemon.config,
        limited_config(daemon.dir.path(), "upload_limit = \"1MiB/s\""),
    )
    .unwrap();
    daemon.ctl(&["reload"]).ok();
    let started = Instant::now();
    let job = daemon.json(&["backup", "create", "live", "--name", "lifted"]);
    std::thread::sleep(Duration::from_secs(2));
    let running = daemon.json(&["job", "show", &job["id"].to_string()]);
    assert_eq!(running["state"], "running", "still held back: {running}");
    std::fs::write(&daemon.config, limited_config(daemon.dir.path(), "")).unwrap();
    daemon.ctl(&["reload"]).ok();
    let done = daemon.wait_for_job(job["id"].as_i64().unwrap(), &["succeeded", "failed"]);
    let took = started.elapsed();
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(
        took < Duration::from_secs(15),
        "the running backup kept the old limit: {took:?}"
    );
    let log = daemon.log();
    assert!(!log.contains("panicked"), "{log}");
}
