//! End to end: S3 Object Lock (`store.lock`) on moto's S3 server, which has Object
//! Lock and versioning. An intruder holding a host's own credentials deletes and
//! overwrites every object of its prefix; a daemon on another host still lists and
//! restores every backup, byte for byte. Locked backups cannot be deleted; prune
//! reclaims only what is no longer locked; shared data stays locked as long as the
//! newest backup that needs it; a bucket without Object Lock is refused at start.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::support::daemon::{TestDaemon, make_environments, standard_config_on, start_failing};
use crate::support::moto;
use crate::support::repo::assert_same_tree;
use crate::support::s3;

const GOVERNANCE: &str = r#"lock = { mode = "governance", extra = "1d" }"#;

/// A daemon for `host` on `store` with `lock` (a TOML line for `[store]`) and
/// `live`'s backups kept for `retention`.
fn lock_daemon(host: &str, store: &str, lock: &str, retention: &str) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    TestDaemon::start_in(dir, |d: &Path| lock_config(d, host, store, lock, retention))
}

fn lock_config(dir: &Path, host: &str, store: &str, lock: &str, retention: &str) -> String {
    standard_config_on(dir, store, "")
        .replace("host = \"test-host\"", &format!("host = \"{host}\""))
        .replace(
            &format!("url = \"{store}\""),
            &format!("url = \"{store}\"\n{lock}"),
        )
        .replace(
            "[environments.live]\n",
            &format!("[environments.live]\nretention = \"{retention}\"\n"),
        )
}

/// moto on loopback with bucket `vault` (with Object Lock when `locked`), and the
/// process's `AWS_*` settings pointing at it while the server lives.
fn moto_with_bucket(locked: bool) -> Option<(moto::Server, u16)> {
    let binary = moto::moto_server()?;
    let (server, port) = moto::start_server(&binary);
    moto::create_bucket(port, "vault", locked);
    // Ours while `server` runs (see support::moto); the daemons inherit them.
    unsafe { s3::point_aws_settings_at(port) };
    Some((server, port))
}

/// The bucket as the daemon's own credentials reach it (what an intruder holds).
fn bucket() -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::from_env()
        .with_url("s3://vault")
        .build()
        .unwrap()
}

fn keys_under(prefix: &str) -> Vec<ObjectPath> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let listed: Vec<_> = bucket()
            .list(Some(&ObjectPath::from(prefix)))
            .try_collect()
            .await
            .unwrap();
        listed.into_iter().map(|m| m.location).collect()
    })
}

/// A copy of `dir` as it is now.
fn snapshot(dir: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.display()))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    copy
}

fn rows(db: &Path) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg("SELECT group_concat(v, ',') FROM t")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The retention date of `key`'s current version, as the store holds it.
fn retention_of(key: &str) -> Option<DateTime<Utc>> {
    let url = url::Url::parse("s3://vault").unwrap();
    let lock = envsnap::store::object_lock::S3Lock::from_url(&url).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(lock.retention(&ObjectPath::from(key), None))
        .unwrap()
        .map(|r| r.until)
}

#[test]
fn a_bucket_without_object_lock_is_refused_at_start() {
    let Some((_server, _port)) = moto_with_bucket(false) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    let config = dir.path().join("envsnap.toml");
    let text = lock_config(dir.path(), "web-01", "s3://vault/hosts", GOVERNANCE, "14d");
    std::fs::write(&config, text).unwrap();
    let line = start_failing(&config);
    assert!(
        line.contains("store.lock is set but the bucket does not have Object Lock enabled"),
        "{line}"
    );
    assert!(keys_under("hosts").is_empty(), "nothing written: {line}");
}

#[test]
fn backups_outlive_an_intruder_holding_the_hosts_credentials() {
    let Some((_server, port)) = moto_with_bucket(true) else {
        return;
    };
    let store = "s3://vault/hosts";
    let mut a = lock_daemon("web-01", store, GOVERNANCE, "14d");
    a.json(&["backup", "create", "live", "--name", "b1", "--wait"]);
    let at_b1 = snapshot(&a.path("live"));
    std::fs::write(a.path("live/app/index.php"), "<?php echo 'v2';\n").unwrap();
    std::fs::write(a.path("live/uploads/new.bin"), vec![9u8; 70_000]).unwrap();
    a.json(&["backup", "create", "live", "--name", "b2", "--wait"]);
    let at_b2 = snapshot(&a.path("live"));

    // Every object of web-01's prefix has a retention date.
    let objects = keys_under("hosts/web-01");
    let locked: Vec<_> = objects
        .iter()
        .filter(|k| !k.as_ref().contains("/locks/") && !k.as_ref().ends_with("/status"))
        .collect();
    assert!(locked.len() >= 5, "{objects:?}");
    for key in &locked {
        let until = retention_of(key.as_ref());
        assert!(
            until.is_some_and(|u| u > Utc::now() + chrono::Duration::days(14)),
            "{key}: {until:?}"
        );
    }

    // The intruder, with the host's own credentials: a locked version cannot be
    // deleted, but every object can be overwritten and hidden under a delete marker.
    a.signal_and_wait(nix::sys::signal::Signal::SIGKILL);
    let url = url::Url::parse("s3://vault").unwrap();
    let lock = envsnap::store::object_lock::S3Lock::from_url(&url).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let versions = runtime
        .block_on(lock.list_versions(&ObjectPath::from("hosts/web-01/manifests")))
        .unwrap();
    let refused = moto::delete_version(
        port,
        "vault",
        &versions[0].key,
        &versions[0].version_id,
        false,
    );
    assert_eq!(refused.status, 403, "{}", refused.text());
    runtime.block_on(async {
        let s3 = bucket();
        for key in &objects {
            s3.put(key, b"ransom note".to_vec().into()).await.unwrap();
            s3.delete(key).await.unwrap();
        }
    });
    assert!(keys_under("hosts/web-01").is_empty());

    // A clean host with the same bucket lists both backups and restores them exactly.
    let b = lock_daemon("web-02", store, GOVERNANCE, "14d");
    let shown = b.json(&["fleet", "show", "web-01"]);
    let names: Vec<_> = shown["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["b2", "b1"], "{shown}");
    for (name, expected) in [("b1", &at_b1), ("b2", &at_b2)] {
        let job = b.json(&[
            "restore",
            "live",
            name,
            "--from",
            "web-01/live",
            "--yes",
            "--wait",
        ]);
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_same_tree(&expected.path().join("app"), &b.path("live/app"));
        assert_eq!(
            std::fs::read(expected.path().join("uploads/photo.jpg")).unwrap(),
            std::fs::read(b.path("live/uploads/photo.jpg")).unwrap()
        );
        assert_eq!(rows(&b.path("live/data/main.db")), "a,b,c");
    }
    assert_eq!(
        std::fs::read(b.path("live/uploads/new.bin")).unwrap(),
        vec![9u8; 70_000]
    );

    // web-01 reinstalled (a new catalog, the same name): its daemon puts the locked
    // originals back at start, `catalog rebuild` finds both backups, and it restores.
    let a2 = lock_daemon("web-01", store, GOVERNANCE, "14d");
    let rebuilt = a2.json(&["catalog", "rebuild"]);
    assert_eq!(rebuilt["backups"], 2, "{rebuilt}");
    let listed = a2.json(&["backup", "list", "live"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let job = a2.json(&["restore", "live", "b1", "--yes", "--wait"]);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_same_tree(&at_b1.path().join("app"), &a2.path("live/app"));
    let verified = a2.json(&["verify", "live", "--read-data"]);
    assert_eq!(verified["problems"], serde_json::json!([]), "{verified}");
}

/// Sleeps until `time` has passed (by half a second, for the clocks' rounding).
fn sleep_past(time: DateTime<Utc>) {
    let wait = (time - Utc::now()).to_std().unwrap_or_default();
    std::thread::sleep(wait + Duration::from_millis(500));
}

fn date(value: &serde_json::Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

/// The decision `prune --dry-run` takes for `name` of `live`.
fn decision(daemon: &TestDaemon, name: &str) -> serde_json::Value {
    let plan = daemon.json(&["prune", "--dry-run"]);
    let decisions = plan["plans"]["live"].as_array().unwrap();
    decisions
        .iter()
        .find(|d| d["name"] == name)
        .unwrap()
        .clone()
}

/// Changes every file of `live` that a backup holds, and every page of its
/// database, so that no chunk of the previous backup is needed by the next.
fn change_everything(daemon: &TestDaemon) {
    for file in ["app/index.php", "app/src/lib.php"] {
        let path = daemon.path(&format!("live/{file}"));
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("// changed\n");
        std::fs::write(path, text).unwrap();
    }
    std::fs::write(daemon.path("live/uploads/photo.jpg"), vec![8u8; 50_000]).unwrap();
    // The database is stored page by page: the update changes its table's page,
    // a new user_version its first page (the header, with the schema).
    let version = Utc::now().timestamp_subsec_nanos();
    let status = Command::new("sqlite3")
        .arg(daemon.path("live/data/main.db"))
        .arg(format!(
            "UPDATE t SET v = v || '2'; PRAGMA user_version = {version};"
        ))
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn locked_backups_wait_for_their_lock_and_prune_reclaims_what_expired() {
    let Some((_server, _port)) = moto_with_bucket(true) else {
        return;
    };
    let lock = r#"lock = { mode = "compliance", extra = "4s" }"#;
    let a = lock_daemon("web-01", "s3://vault/hosts", lock, "10s");
    let b1 = a.json(&["backup", "create", "live", "--name", "b1", "--wait"]);
    let first_packs = keys_under("hosts/web-01/packs");
    change_everything(&a);
    a.json(&["backup", "create", "live", "--name", "b2", "--wait"]);

    // Shared data stays locked as long as the newest backup that needs it.
    let manifests = keys_under("hosts/web-01/manifests/live");
    let newest = manifests
        .iter()
        .filter_map(|k| retention_of(k.as_ref()))
        .max()
        .unwrap();
    for pack in &first_packs {
        let until = retention_of(pack.as_ref()).unwrap();
        assert!(until >= newest, "{pack}: {until} < {newest}");
    }

    // Locked: refused with the date it can go from.
    let refused = a.ctl(&["backup", "delete", "live", "b1", "--yes"]);
    assert!(
        refused.stderr.contains("backup b1 of live is locked until")
            && refused.stderr.contains("it can be deleted from then on"),
        "{}",
        refused.stderr
    );
    // Expired but still locked: prune keeps it and says until when.
    sleep_past(date(&b1["backup"]["expires"]));
    let kept = decision(&a, "b1");
    let reason = kept["reason"].as_str().unwrap();
    assert!(
        kept["keep"] == true && reason.starts_with("locked until "),
        "{kept}"
    );

    // Once its lock passed: pruned; its packs wait for their own lock.
    sleep_past(reason.trim_start_matches("locked until ").parse().unwrap());
    let pruned = a.json(&["prune"]);
    assert_eq!(
        pruned["pruned"],
        serde_json::json!(["live/b1"]),
        "{pruned}\n{}",
        a.log()
    );
    let store = &pruned["store"];
    assert!(
        store["waiting_for_lock"].as_u64().unwrap() >= first_packs.len() as u64,
        "{pruned}"
    );
    assert_eq!(store["packs_deleted"], 0, "{pruned}");
    let planned = a.json(&["prune", "--dry-run"]);
    let waiting = &planned["waiting_for_lock"];
    assert!(
        waiting["objects"].as_u64().unwrap() >= first_packs.len() as u64,
        "{planned}"
    );
    assert!(waiting["next_unlock"].is_string(), "{planned}");

    // And once that passed too, the next prune deletes them: the lock of data no
    // backup needs is not lengthened any more (it passes within seconds here).
    let next_unlock = date(&store["next_unlock"]);
    assert!(
        next_unlock < Utc::now() + chrono::Duration::seconds(30),
        "{pruned}"
    );
    sleep_past(next_unlock);
    let pruned = a.json(&["prune"]);
    assert!(
        pruned["store"]["packs_deleted"].as_u64().unwrap() >= first_packs.len() as u64,
        "{pruned}"
    );
    let left = keys_under("hosts/web-01/packs");
    assert!(first_packs.iter().all(|p| !left.contains(p)), "{left:?}");
    let listed = a.json(&["backup", "list", "live"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // b2 has expired too, but retention keeps the newest backup: its lock follows.
    let b2_key = keys_under("hosts/web-01/manifests/live").remove(0);
    let relocked = retention_of(b2_key.as_ref()).unwrap();
    assert!(
        relocked > Utc::now() + chrono::Duration::days(6),
        "{relocked}"
    );

    // Kept forever: a legal hold on its manifest, which refuses deletion; a date
    // lifts the hold and locks it until that date + extra (or longer).
    a.json(&["backup", "keep", "live", "b2", "--forever"]);
    assert!(lock_state(b2_key.as_ref()).legal_hold);
    let refused = a.ctl(&["backup", "delete", "live", "b2", "--yes"]);
    assert!(
        refused.stderr.contains("kept forever under a legal hold"),
        "{}",
        refused.stderr
    );
    let until = Utc::now() + chrono::Duration::hours(1);
    let until_text = until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    a.json(&["backup", "keep", "live", "b2", "--until", &until_text]);
    let state = lock_state(b2_key.as_ref());
    assert!(!state.legal_hold);
    let locked = state.retention.unwrap().until;
    assert!(
        locked >= until + chrono::Duration::seconds(3),
        "{locked} for {until}"
    );
}

fn lock_state(key: &str) -> envsnap::store::object_lock::LockState {
    let url = url::Url::parse("s3://vault").unwrap();
    let lock = envsnap::store::object_lock::S3Lock::from_url(&url).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(lock.lock_state(&ObjectPath::from(key), None))
        .unwrap()
}
