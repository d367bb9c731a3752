//! End to end: `envsnapctl backup link` with a daemon whose store is a real S3 server
//! on loopback (s3s-fs): the signed URL serves the part to anyone holding it, without
//! credentials, until it expires; then the export object is gone.

use std::time::{Duration, Instant};

use crate::support::daemon::{TestDaemon, make_environments, standard_config_on};
use crate::support::http;
use crate::support::s3;

#[test]
fn a_link_serves_the_part_until_it_expires() {
    let Some(binary) = s3::s3s_fs() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s3_root = dir.path().join("s3");
    let (_server, port) = s3::start_server(&binary, &s3_root);
    // Ours while `_server` runs (see support::s3); the daemon inherits them.
    unsafe { s3::point_aws_settings_at(port) };
    make_environments(dir.path());
    let daemon = TestDaemon::start_in(dir, |d| standard_config_on(d, "s3://backups/fleet", ""));
    let job = daemon.json(&["backup", "create", "live", "--name", "b1", "--wait"]);
    assert_eq!(job["job"]["state"], "succeeded", "{job}");
    let link = link_database_and_fetch(&daemon, "3s");
    let url = link["url"].as_str().unwrap();
    assert!(
        url.contains("/exports/") && url.contains("X-Amz-Signature="),
        "{link}"
    );
    let exports = s3_root.join("backups/fleet/test-host/exports");
    assert_eq!(
        walk_files(&exports).len(),
        1,
        "the export object is in the store"
    );

    // A tampered URL is refused by the store.
    let tampered = http::get(&url.replace("X-Amz-Expires=3", "X-Amz-Expires=9"));
    assert_eq!(tampered.status, 403);

    // Longer than an hour is refused; nothing is exported.
    let refused = daemon.ctl(&[
        "backup", "link", "live", "b1", "--part", "code", "--ttl", "2h",
    ]);
    assert_eq!(
        refused.stderr.trim(),
        "envsnapctl: a link lasts from 1 second to 1 hour, not 7200s"
    );

    // After the TTL: the link no longer works and the export object is deleted.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = walk_files(&exports);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "expired exports left: {left:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_ne!(http::get(url).status, 200);
    assert_imports_from_link_and_store(&daemon, |url| {
        format!("s3:/{}", url::Url::parse(url).unwrap().path())
    });
    let missing = daemon.ctl(&[
        "import",
        "live",
        "--wait",
        "--part",
        "code=s3://backups/nothing-here.tar",
    ]);
    assert!(
        missing
            .stderr
            .contains("failed: importing code: cannot fetch s3://backups/nothing-here.tar: "),
        "{}",
        missing.stderr
    );

    assert!(
        !daemon.log().contains("X-Amz-Signature"),
        "a signed URL is a credential: never in the log"
    );
    let log = daemon.json(&["log", "live"]);
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "link" && e["outcome"] == "succeeded"),
        "{log}"
    );
}

/// Links `b1`'s `database:main` for `ttl`, fetches the link without credentials, and
/// checks it serves the bytes a download of the part gives; returns the link's answer.
pub(super) fn link_database_and_fetch(daemon: &TestDaemon, ttl: &str) -> serde_json::Value {
    let db = daemon.path("main.db");
    let part = ["--part", "database:main"];
    let mut download = vec!["backup", "download", "live", "b1"];
    download.extend(part);
    download.extend(["-o", db.to_str().unwrap()]);
    daemon.ctl(&download).ok();
    let mut args = vec!["backup", "link", "live", "b1"];
    args.extend(part);
    args.extend(["--ttl", ttl]);
    let link = daemon.json(&args);
    let url = link["url"].as_str().unwrap();
    assert!(url.contains("/live-b1-database-main.db?"), "{url}");
    let fetched = http::get(url);
    assert_eq!(fetched.status, 200, "{}", fetched.text());
    assert_eq!(
        fetched.body,
        std::fs::read(&db).unwrap(),
        "the link serves the part's bytes"
    );
    assert_eq!(link["bytes"].as_u64(), Some(fetched.body.len() as u64));
    link
}

/// Imports `b1`'s code (linked as tar.zst) twice: from the link (http, signed) and
/// from the same object's store URL (`store_url` of the link's URL); both imports
/// hold the code `b1` holds.
pub(super) fn assert_imports_from_link_and_store(
    daemon: &TestDaemon,
    store_url: impl Fn(&str) -> String,
) {
    let link = daemon.json(&[
        "backup", "link", "live", "b1", "--part", "code", "--format", "tar.zst", "--ttl", "10m",
    ]);
    let url = link["url"].as_str().unwrap();
    let store_url = store_url(url);
    for (name, from) in [("via-link", url), ("via-store", store_url.as_str())] {
        let imported = daemon.json(&[
            "import",
            "live",
            "--name",
            name,
            "--wait",
            "--part",
            &format!("code={from}"),
        ]);
        assert_eq!(imported["job"]["state"], "succeeded", "{imported}");
    }
    let size = |backup: &str| {
        let shown = daemon.json(&["backup", "show", "live", backup]);
        shown["parts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["part"] == "code")
            .unwrap()["size"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(size("via-link"), size("b1"));
    assert_eq!(size("via-store"), size("b1"));
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}
