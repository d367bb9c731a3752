//! End to end: a daemon whose store is the real S3 server (s3s-fs) reached through
//! the test proxy ([`crate::support::netproxy`]), which adds latency and injects
//! faults the way a distant or struggling object store would (issue 14):
//! - 25 ms each way: backup, full restore, verify --read-data and prune all succeed;
//! - random 503s, stalled responses and connections dropped mid-response: the same
//!   succeed, retried by the store layer, and every kind of fault really happened;
//! - every PUT refused (403) halfway through a backup: the backup fails at once with
//!   the store's message and lists nothing; once PUTs work again, a prune leaves
//!   exactly the packs of the backups that exist, and they verify.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::daemon::{TestDaemon, make_environments, standard_config_on};
use crate::support::netproxy::{Faults, NetProxy, ProxyOptions};
use crate::support::ports::free_loopback_port;
use crate::support::repo::assert_same_tree;
use crate::support::s3;

/// The store's URL: bucket `backups` of the test server.
const STORE: &str = "s3://backups/objstore";
/// `[store]` settings: a transient failure is retried for 20 s at most.
const STORE_SETTINGS: &str = "retry_timeout = \"20s\"";

/// s3s-fs, the proxy in front of it, and a daemon whose store is reached through it.
struct ProxiedStore {
    // Dropped in this order: the daemon before the proxy before the server.
    daemon: TestDaemon,
    proxy: NetProxy,
    _server: s3::Server,
    /// The host's repository as s3s-fs keeps it on disk.
    host_dir: PathBuf,
}

/// Starts it all with `data_mib` MiB of random files in `live/uploads/data`; None
/// where s3s-fs is not installed.
fn start(options: ProxyOptions, data_mib: usize) -> Option<ProxiedStore> {
    let binary = s3::s3s_fs()?;
    let dir = tempfile::tempdir().unwrap();
    let s3_root = dir.path().join("s3");
    let host_dir = s3_root.join("backups/objstore/test-host");
    let (server, port) = s3::start_server(&binary, &s3_root);
    let proxy = NetProxy::start(ProxyOptions {
        listen_port: free_loopback_port(),
        upstream_port: port,
        ..options
    })
    .unwrap();
    // Ours while `server` runs (see support::s3); the daemon inherits them.
    unsafe { s3::point_aws_settings_at(proxy.port()) };
    make_environments(dir.path());
    write_random_files(&dir.path().join("live/uploads/data"), data_mib);
    let url = format!("url = \"{STORE}\"");
    let daemon = TestDaemon::start_in(dir, |d| {
        standard_config_on(d, STORE, "").replace(&url, &format!("{url}\n{STORE_SETTINGS}"))
    });
    Some(ProxiedStore {
        daemon,
        proxy,
        _server: server,
        host_dir,
    })
}

/// `mib` files of 1 MiB of random bytes (which do not compress: real uploads).
fn write_random_files(dir: &Path, mib: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut random = std::fs::File::open("/dev/urandom").unwrap();
    for n in 0..mib {
        let mut bytes = vec![0; 1 << 20];
        random.read_exact(&mut bytes).unwrap();
        std::fs::write(dir.join(format!("file-{n:03}.bin")), bytes).unwrap();
    }
}

/// The objects below `dir` in s3s-fs's directory, as paths relative to it.
fn objects(dir: &Path) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).into_iter().flatten().flatten() {
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                found.insert(entry.path().strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    found
}

fn backup_names(daemon: &TestDaemon) -> Vec<String> {
    daemon
        .json(&["backup", "list", "live"])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_verifies(daemon: &TestDaemon) {
    let verify = daemon.json(&["verify", "live", "--read-data"]);
    assert_eq!(verify["problems"].as_array().unwrap().len(), 0, "{verify}");
}

/// Backs up `live`, empties its files, restores them in full and compares every byte
/// with a copy taken at the backup; then a second backup, the first deleted (which
/// prunes), a prune, and verify --read-data.
fn backup_restore_verify_prune(daemon: &TestDaemon) {
    let created = daemon.json(&["backup", "create", "live", "--name", "first", "--wait"]);
    assert_eq!(created["job"]["state"], "succeeded", "{created}");
    let copy = daemon.path("copy");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(daemon.path("live"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    for part in ["live/app", "live/uploads"] {
        std::fs::remove_dir_all(daemon.path(part)).unwrap();
        std::fs::create_dir(daemon.path(part)).unwrap();
    }
    let restored = daemon.json(&[
        "restore",
        "live",
        "first",
        "--yes",
        "--wait",
        "--no-safety-backup",
    ]);
    assert_eq!(restored["state"], "succeeded", "{restored}");
    assert_same_tree(&copy.join("app"), &daemon.path("live/app"));
    // The excluded cache's content is not restored; everything else is, byte for byte.
    for cache in [
        copy.join("uploads/cache"),
        daemon.path("live/uploads/cache"),
    ] {
        std::fs::remove_dir_all(cache).unwrap();
    }
    assert_same_tree(&copy.join("uploads"), &daemon.path("live/uploads"));

    // A second backup without half the data; deleting the first frees that half.
    for n in 0..count_files(&daemon.path("live/uploads/data")) / 2 {
        std::fs::remove_file(daemon.path(&format!("live/uploads/data/file-{n:03}.bin"))).unwrap();
    }
    let second = daemon.json(&["backup", "create", "live", "--name", "second", "--wait"]);
    assert_eq!(second["job"]["state"], "succeeded", "{second}");
    let deleted = daemon.json(&["backup", "delete", "live", "first", "--yes"]);
    assert!(
        deleted["prune"]["bytes_freed"].as_u64().unwrap() > 0,
        "{deleted}"
    );
    let pruned = daemon.json(&["prune"]);
    assert_eq!(pruned["store"]["packs_deleted"], 0, "{pruned}");
    assert_eq!(backup_names(daemon), ["second"]);
    assert_verifies(daemon);
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn with_25ms_each_way_backup_restore_verify_and_prune_succeed() {
    let Some(rig) = start(
        ProxyOptions {
            delay: Duration::from_millis(25),
            ..Default::default()
        },
        24,
    ) else {
        return;
    };
    backup_restore_verify_prune(&rig.daemon);
    let counts = rig.proxy.counts();
    assert!(
        counts.requests > 20,
        "the store was reached through the proxy: {counts:?}"
    );
}

#[test]
fn random_503s_stalls_and_dropped_connections_are_retried() {
    let Some(rig) = start(
        ProxyOptions {
            delay: Duration::from_millis(2),
            faults: Faults {
                seed: 14,
                unavailable: 0.15,
                stall: 0.05,
                stall_for: Duration::from_secs(1),
                drop: 0.15,
            },
            ..Default::default()
        },
        24,
    ) else {
        return;
    };
    backup_restore_verify_prune(&rig.daemon);
    let counts = rig.proxy.counts();
    assert!(
        counts.unavailable > 0 && counts.stalled > 0 && counts.dropped > 0,
        "every kind of fault was injected: {counts:?}"
    );
}

#[test]
fn puts_refused_halfway_fail_the_backup_at_once_and_prune_cleans_up() {
    let Some(rig) = start(ProxyOptions::default(), 0) else {
        return;
    };
    let daemon = &rig.daemon;
    let created = daemon.json(&["backup", "create", "live", "--name", "first", "--wait"]);
    assert_eq!(created["job"]["state"], "succeeded", "{created}");
    let packs_of_first = objects(&rig.host_dir.join("packs"));

    // Enough new data for several packs; PUTs are refused once the first has landed.
    write_random_files(&daemon.path("live/uploads/data"), 80);
    let job = daemon.json(&["backup", "create", "live", "--name", "refused"]);
    let id = job["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while objects(&rig.host_dir.join("packs")).len() <= packs_of_first.len() {
        assert!(
            Instant::now() < deadline,
            "the backup never uploaded a pack"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    rig.proxy.deny(Some("PUT"));
    let refused_at = Instant::now();
    let job = daemon.wait_for_job(id, &["failed", "succeeded"]);
    let took = refused_at.elapsed();
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        took < Duration::from_secs(5),
        "a refusal is not retried for the 20 s retry_timeout: failed after {took:?}"
    );
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("403 Forbidden") && error.contains("AccessDenied"),
        "the store's answer is in the job's error: {error}"
    );
    assert!(rig.proxy.counts().denied > 0);
    assert_eq!(backup_names(daemon), ["first"], "no half backup is listed");

    rig.proxy.deny(None);
    daemon.json(&["prune"]);
    assert_eq!(
        objects(&rig.host_dir.join("packs")),
        packs_of_first,
        "the refused backup's packs are gone, the first's kept"
    );
    assert_eq!(
        objects(&rig.host_dir.join("locks")),
        BTreeSet::new(),
        "no lock is left behind"
    );
    assert_verifies(daemon);
    let again = daemon.json(&["backup", "create", "live", "--name", "refused", "--wait"]);
    assert_eq!(
        again["job"]["state"], "succeeded",
        "the name is free: {again}"
    );
    assert_verifies(daemon);
}
