//! End to end: several real daemons (own state, host name, socket) sharing one store
//! see each other in `fleet list`; a silent one goes stale and fires the hook once,
//! comes back and recovers; its environment is rebuilt on another host from the
//! fleet view; it is retired with `fleet forget`. Once on a local directory store,
//! once on the real S3 server.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::metrics_e2e::{free_address, get};
use crate::support::daemon::{TestDaemon, make_environments, standard_config_on};
use crate::support::repo::assert_same_tree;
use crate::support::s3;

/// A daemon for `host` whose store is `store` (a URL), with `[fleet]` settings and
/// optionally a metrics listener.
fn fleet_daemon(host: &str, store: &str, fleet: &str, metrics: Option<&str>) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    std::fs::write(
        dir.path().join("live/app/index.php"),
        format!("{host}'s code"),
    )
    .unwrap();
    let listen = metrics.map_or_else(String::new, |a| format!("metrics_listen = \"{a}\"\n"));
    TestDaemon::start_in(dir, |d: &Path| {
        standard_config_on(d, store, &format!("[fleet]\nheartbeat = \"1s\"\n{fleet}")).replace(
            "host = \"test-host\"",
            &format!("host = \"{host}\"\n{listen}"),
        )
    })
}

/// The fleet as `daemon` lists it, waiting (up to 30 s) until `ready` holds.
fn fleet_until(
    daemon: &TestDaemon,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let fleet = daemon.json(&["fleet", "list"]);
        if ready(&fleet) {
            return fleet;
        }
        assert!(Instant::now() < deadline, "never {what}: {fleet}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn host<'a>(fleet: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    fleet
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == name)
        .unwrap_or(&serde_json::Value::Null)
}

fn env<'a>(host: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    host["environments"]
        .as_array()
        .and_then(|envs| envs.iter().find(|e| e["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

fn hook_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_shared_local_store_shows_the_fleet_alarms_once_and_rebuilds_a_lost_host() {
    let shared = tempfile::tempdir().unwrap();
    let store = format!("file://{}", shared.path().join("store").display());
    let log = shared.path().join("hooks.log");
    let hook = |event: &str| {
        format!(
            "[\"sh -c 'echo {event} $ENVSNAP_HOST/$ENVSNAP_ENV >> {}'\"]",
            log.display()
        )
    };
    let watch = format!(
        "watch = true\non_stale = {}\non_recovered = {}\n",
        hook("stale"),
        hook("recovered")
    );
    let metrics = free_address();
    let a = fleet_daemon("web-01", &store, &watch, Some(&metrics.to_string()));
    let mut b = fleet_daemon("web-02", &store, "", None);
    a.json(&["backup", "create", "live", "--name", "a1", "--wait"]);
    b.json(&["backup", "create", "live", "--name", "b1", "--wait"]);

    // Each sees both, with the other's last backup (its status follows every job).
    for daemon in [&a, &b] {
        let fleet = fleet_until(daemon, "both hosts with their backups", |f| {
            env(host(f, "web-02"), "live")["last_backup"] == "b1"
                && env(host(f, "web-01"), "live")["last_backup"] == "a1"
        });
        let web02 = host(&fleet, "web-02");
        assert_eq!(web02["stale"], false, "{fleet}");
        assert_eq!(env(web02, "live")["backups"], 1, "{fleet}");
        assert_eq!(env(web02, "live")["status"], "ready", "{fleet}");
    }
    let table = a.ctl(&["fleet", "list"]).ok().stdout;
    assert!(table.contains("web-02") && table.contains("b1"), "{table}");

    // web-02 stops: stale after three missed heartbeats, the hook fires once.
    b.signal_and_wait(Signal::SIGTERM);
    let fleet = fleet_until(&a, "web-02 stale", |f| host(f, "web-02")["stale"] == true);
    let reason = host(&fleet, "web-02")["stale_reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.starts_with("no heartbeat for"), "{reason}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !hook_lines(&log).contains(&"stale web-02/".to_owned()) {
        assert!(Instant::now() < deadline, "on_stale never ran");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        hook_lines(&log),
        ["stale web-02/"],
        "once, for the host only"
    );
    let (_, body) = get(metrics, "/metrics");
    assert!(
        body.contains("envsnap_fleet_stale{host=\"web-02\",env=\"\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("envsnap_fleet_last_backup_timestamp_seconds{host=\"web-02\",env=\"live\"}"),
        "{body}"
    );

    // It comes back: recovered, once.
    b.spawn();
    fleet_until(&a, "web-02 fresh again", |f| {
        host(f, "web-02")["stale"] == false
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !hook_lines(&log).contains(&"recovered web-02/".to_owned()) {
        assert!(Instant::now() < deadline, "on_recovered never ran");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Its backups cannot be deleted while it is alive.
    let refused = a.ctl(&["fleet", "forget", "web-02", "--delete-backups", "--yes"]);
    assert!(
        refused
            .stderr
            .contains("stop its daemon before deleting its backups"),
        "{}",
        refused.stderr
    );

    // Disaster recovery: web-02 is lost; its environment is rebuilt on web-01 from the
    // fleet view and the shared store.
    b.signal_and_wait(Signal::SIGKILL);
    let shown = a.json(&["fleet", "show", "web-02"]);
    let backups = shown["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1, "{shown}");
    assert_eq!(backups[0]["name"], "b1", "{shown}");
    let job = a.json(&[
        "restore",
        "live",
        "b1",
        "--from",
        "web-02/live",
        "--yes",
        "--wait",
    ]);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_same_tree(&b.path("live/app"), &a.path("live/app"));

    // A daemon cannot forget itself; retiring keeps the backups and stops alarms.
    let refused = a.ctl(&["fleet", "forget", "web-01", "--delete-backups", "--yes"]);
    assert!(
        refused.stderr.contains("web-01 is this host"),
        "{}",
        refused.stderr
    );
    let retired = a.json(&["fleet", "forget", "web-02"]);
    assert_eq!(retired["objects_deleted"], 0, "{retired}");
    let fleet = a.json(&["fleet", "list"]);
    let web02 = host(&fleet, "web-02");
    assert_eq!(
        (&web02["retired"], &web02["stale"]),
        (&true.into(), &false.into())
    );
    assert!(shared.path().join("store/web-02/manifests/live").is_dir());
    let missing = a.ctl(&["fleet", "show", "web-99"]);
    assert!(
        missing.stderr.contains("no host web-99 in the store"),
        "{}",
        missing.stderr
    );
}

#[test]
fn hosts_sharing_an_s3_bucket_see_each_other() {
    let Some(binary) = s3::s3s_fs() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_server, port) = s3::start_server(&binary, &dir.path().join("s3"));
    // Ours while `_server` runs (see support::s3); the daemons inherit them.
    unsafe { s3::point_aws_settings_at(port) };
    let store = "s3://backups/fleet";
    let a = fleet_daemon("web-01", store, "", None);
    let b = fleet_daemon("web-02", store, "", None);
    b.json(&["backup", "create", "live", "--name", "b1", "--wait"]);
    let fleet = fleet_until(&a, "web-02's backup from S3", |f| {
        env(host(f, "web-02"), "live")["last_backup"] == "b1"
    });
    assert_eq!(host(&fleet, "web-01")["stale"], false, "{fleet}");
    let shown = a.json(&["fleet", "show", "web-02"]);
    assert_eq!(shown["backups"][0]["name"], "b1", "{shown}");
}
