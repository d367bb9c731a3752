//! End to end: `envsnapctl backup link` with a daemon whose store is a real S3 server
//! on loopback (s3s-fs): the signed URL serves the part to anyone holding it, without
//! credentials, until it expires; then the export object is gone.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::support::daemon::{TestDaemon, make_environments, standard_config};
use crate::support::s3;

/// GET `url` (plain HTTP on loopback) without credentials: status code and body.
fn fetch(url: &str) -> (u16, Vec<u8>) {
    let url = url::Url::parse(url).unwrap();
    let authority = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let mut stream = std::net::TcpStream::connect(&authority).unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = response[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = unchunk(&body);
    }
    (status, body)
}

fn unchunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line + 2..line + 2 + size]);
        data = &data[line + 2 + size + 2..];
    }
}

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
    let local = format!("url = \"file://{}/store\"", dir.path().display());
    let daemon = TestDaemon::start_in(dir, |d| {
        standard_config(d, "").replace(&local, "url = \"s3://backups/fleet\"")
    });
    let job = daemon.json(&["backup", "create", "live", "--name", "b1", "--wait"]);
    assert_eq!(job["job"]["state"], "succeeded", "{job}");
    let db = daemon.path("main.db");
    daemon
        .ctl(&[
            "backup",
            "download",
            "live",
            "b1",
            "--part",
            "database:main",
            "-o",
            db.to_str().unwrap(),
        ])
        .ok();

    let link = daemon.json(&[
        "backup",
        "link",
        "live",
        "b1",
        "--part",
        "database:main",
        "--ttl",
        "3s",
    ]);
    let url = link["url"].as_str().unwrap();
    assert!(
        url.contains("/exports/") && url.contains("X-Amz-Signature="),
        "{link}"
    );
    assert!(url.contains("live-b1-database-main.db"), "{url}");
    let (status, body) = fetch(url);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        body,
        std::fs::read(&db).unwrap(),
        "the link serves the part's bytes"
    );
    assert_eq!(link["bytes"].as_u64(), Some(body.len() as u64));
    let exports = s3_root.join("backups/fleet/test-host/exports");
    assert_eq!(
        walk_files(&exports).len(),
        1,
        "the export object is in the store"
    );

    // A tampered URL is refused by the store.
    let (status, _) = fetch(&url.replace("X-Amz-Expires=3", "X-Amz-Expires=9"));
    assert_eq!(status, 403);

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
    let (status, _) = fetch(url);
    assert_ne!(status, 200);
    // Import from URLs: a link (http, signed) and the store URL of the same object.
    let link = daemon.json(&[
        "backup", "link", "live", "b1", "--part", "code", "--format", "tar.zst", "--ttl", "10m",
    ]);
    let url = link["url"].as_str().unwrap();
    let key = url::Url::parse(url).unwrap().path().to_owned();
    let store_url = format!("s3:/{key}");
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
