//! End to end: a daemon whose store is Azure Blob Storage (`az://backups/fleet`), served
//! by Azurite on loopback and reached through the `AZURE_*` settings operators use for
//! the emulator. A backup restores byte for byte; `verify --read-data` reads every pack
//! from the container and catches one changed behind the daemon's back; a deleted
//! backup's data leaves the container; a link (a SAS URL) serves a part to anyone
//! holding it, without credentials, until it expires. What is in the container is
//! checked with the fixture's own signed listing, not with the code under test.

use std::time::{Duration, Instant};

use super::link_e2e::{assert_imports_from_link_and_store, link_database_and_fetch};
use super::restore_e2e::{assert_live_equals, drift, snapshot};
use crate::support::azurite::{self, Azurite, Blob};
use crate::support::daemon::{TestDaemon, make_environments, standard_config_on};
use crate::support::http;
use crate::support::netproxy::{NetProxy, ProxyOptions};

const CONTAINER: &str = "backups";
/// The daemon's store, and where its host's repository lies in the container.
const STORE: &str = "az://backups/fleet";
const REPOSITORY: &str = "fleet/test-host/";

/// A daemon on Azurite. Fields drop in order: the daemon stops before the emulator.
struct OnAzure {
    daemon: TestDaemon,
    azurite: Azurite,
}

/// Azurite with the `backups` container, the settings pointed at it, and a daemon (the
/// standard config) whose store is [`STORE`], with a first backup of `live` named
/// `first`; None where Azurite is not installed.
fn start_on_azure(first: &str) -> Option<OnAzure> {
    let binary = azurite::azurite_blob()?;
    let dir = tempfile::tempdir().unwrap();
    let azurite = azurite::start(&binary, &dir.path().join("azurite"));
    // Ours while `azurite` runs (see support::azurite); the daemon inherits them.
    unsafe { azurite.point_azure_settings_here() };
    azurite.create_container(CONTAINER);
    make_environments(dir.path());
    let daemon = TestDaemon::start_in(dir, |d| standard_config_on(d, STORE, ""));
    let job = daemon.json(&["backup", "create", "live", "--name", first, "--wait"]);
    assert_eq!(job["job"]["state"], "succeeded", "{job}");
    Some(OnAzure { daemon, azurite })
}

fn blobs_under(azurite: &Azurite, prefix: &str) -> Vec<Blob> {
    azurite.list_blobs(CONTAINER, &format!("{REPOSITORY}{prefix}"))
}

fn total_size(blobs: &[Blob]) -> u64 {
    blobs.iter().map(|b| b.size).sum()
}

#[test]
fn backups_on_azure_restore_verify_and_leave_with_their_data() {
    let Some(on) = start_on_azure("good") else {
        return;
    };
    let (daemon, azurite) = (&on.daemon, &on.azurite);
    let names: Vec<String> = blobs_under(azurite, "")
        .into_iter()
        .map(|b| b.name)
        .collect();
    for expected in ["config", "manifests/live/", "packs/", "index/"] {
        let wanted = format!("{REPOSITORY}{expected}");
        assert!(
            names.iter().any(|n| n.starts_with(&wanted)),
            "no {wanted} in the container: {names:?}"
        );
    }
    assert!(!daemon.path("store").exists(), "nothing stored locally");

    // Restore after every part drifted: the environment is the backup's again.
    let good = snapshot(daemon, "good-copy");
    drift(daemon);
    let restored = daemon.json(&["restore", "live", "good", "--yes", "--wait"]);
    assert_eq!(restored["state"], "succeeded", "{restored}");
    assert_live_equals(daemon, &good);

    // A backup with 4 MB of its own (incompressible), then one without it.
    let mut unique = vec![0u8; 4_000_000];
    getrandom::fill(&mut unique).unwrap();
    std::fs::write(daemon.path("live/uploads/unique.bin"), &unique).unwrap();
    daemon.json(&[
        "backup",
        "create",
        "live",
        "--name",
        "with-unique",
        "--wait",
    ]);
    std::fs::remove_file(daemon.path("live/uploads/unique.bin")).unwrap();
    daemon.json(&["backup", "create", "live", "--name", "without", "--wait"]);

    // verify --read-data reads every pack in the container.
    let packs = blobs_under(azurite, "packs/");
    let verify = daemon.json(&["verify", "live", "--read-data"]);
    assert_eq!(verify["problems"], serde_json::json!([]), "{verify}");
    assert_eq!(verify["packs_read"], packs.len(), "{verify}");
    assert_eq!(verify["bytes_read"], total_size(&packs), "{verify}");

    // Deleting the backup prunes its unique data out of the container.
    let deleted = daemon.json(&["backup", "delete", "live", "with-unique", "--yes"]);
    assert_eq!(deleted["deleted"], "with-unique", "{deleted}");
    let freed = deleted["prune"]["bytes_freed"].as_u64().unwrap();
    assert!(freed > 3_000_000, "{deleted}");
    let left = blobs_under(azurite, "packs/");
    let gone: Vec<&Blob> = packs.iter().filter(|p| !left.contains(p)).collect();
    assert!(!gone.is_empty(), "no pack left the container");
    assert!(
        total_size(&packs).saturating_sub(total_size(&left)) > 3_000_000,
        "the container shrank by the backup's unique data: {} -> {}",
        total_size(&packs),
        total_size(&left)
    );
    let verify = daemon.json(&["verify", "live", "--read-data"]);
    assert_eq!(verify["problems"], serde_json::json!([]), "{verify}");
    assert_eq!(verify["bytes_read"], total_size(&left), "{verify}");

    // A pack changed in the container (same size, one byte flipped) is caught.
    let victim = left.iter().max_by_key(|b| b.size).unwrap();
    let mut bytes = azurite.get_blob(CONTAINER, &victim.name);
    assert_eq!(bytes.len() as u64, victim.size);
    bytes[victim.size as usize / 2] ^= 0xff;
    azurite.put_blob(CONTAINER, &victim.name, &bytes);
    let failed = daemon.ctl(&["--json", "verify", "live", "--read-data"]);
    assert_ne!(failed.status, 0, "verify fails: {}", failed.stdout);
    let verify = failed.json();
    let pack_id = victim.name.rsplit('/').next().unwrap();
    let problems = verify["problems"].as_array().unwrap();
    assert!(
        !problems.is_empty()
            && problems
                .iter()
                .all(|p| p.as_str().unwrap().contains(pack_id)),
        "{verify}"
    );
}

#[test]
fn an_azure_link_serves_the_part_without_credentials_until_it_expires() {
    let Some(on) = start_on_azure("b1") else {
        return;
    };
    let (daemon, azurite) = (&on.daemon, &on.azurite);
    let link = link_database_and_fetch(daemon, "3s");
    let url = link["url"].as_str().unwrap();
    let export_prefix = format!(
        "{}/{}/{CONTAINER}/{REPOSITORY}exports/",
        azurite.url(),
        azurite::ACCOUNT
    );
    assert!(url.starts_with(&export_prefix), "{url}");
    let parsed = url::Url::parse(url).unwrap();
    let signed: Vec<String> = parsed.query_pairs().map(|(k, _)| k.into_owned()).collect();
    for field in ["sig", "se", "sp"] {
        assert!(signed.iter().any(|k| k == field), "no {field} in {url}");
    }
    assert_eq!(
        blobs_under(azurite, "exports/").len(),
        1,
        "the export is stored"
    );

    // Without its signature, or with a permission added, the URL is refused.
    let mut unsigned = parsed.clone();
    unsigned.set_query(None);
    assert_ne!(http::get(unsigned.as_str()).status, 200);
    let mut widened = parsed.clone();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "sp" { "rwd".into() } else { v };
            (k.into_owned(), v.into_owned())
        })
        .collect();
    widened.query_pairs_mut().clear().extend_pairs(pairs);
    assert_eq!(http::get(widened.as_str()).status, 403);

    // After the TTL: the link no longer works and the export blob is deleted.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = blobs_under(azurite, "exports/");
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "expired exports left: {left:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_ne!(http::get(url).status, 200);

    // Import from URLs: a link and the store URL of the same blob.
    assert_imports_from_link_and_store(daemon, |url| {
        let (key, _signature) = url
            .strip_prefix(&export_prefix)
            .unwrap()
            .split_once('?')
            .unwrap();
        format!("{STORE}/test-host/exports/{key}")
    });

    assert!(
        !daemon.log().contains("sig="),
        "a signed URL is a credential: never in the log"
    );
}

/// The same round trip with 25 ms added each way between the daemon and Azurite (the
/// test proxy, `support::netproxy`): a backup, a full restore after every part
/// drifted, and verify --read-data, all through the slow link.
#[test]
fn with_25ms_each_way_azure_backs_up_restores_and_verifies() {
    let Some(binary) = azurite::azurite_blob() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let azurite = azurite::start(&binary, &dir.path().join("azurite"));
    unsafe { azurite.point_azure_settings_here() };
    azurite.create_container(CONTAINER);
    let upstream_port = azurite.url().rsplit(':').next().unwrap().parse().unwrap();
    let proxy = NetProxy::start(ProxyOptions {
        upstream_port,
        delay: Duration::from_millis(25),
        ..Default::default()
    })
    .unwrap();
    // Still ours: `azurite` holds the settings (see support::azurite).
    let through_proxy = format!("http://127.0.0.1:{}", proxy.port());
    unsafe { std::env::set_var("AZURITE_BLOB_STORAGE_URL", through_proxy) };
    make_environments(dir.path());
    let daemon = TestDaemon::start_in(dir, |d| standard_config_on(d, STORE, ""));

    let job = daemon.json(&["backup", "create", "live", "--name", "slow", "--wait"]);
    assert_eq!(job["job"]["state"], "succeeded", "{job}");
    let good = snapshot(&daemon, "slow-copy");
    drift(&daemon);
    let restored = daemon.json(&["restore", "live", "slow", "--yes", "--wait"]);
    assert_eq!(restored["state"], "succeeded", "{restored}");
    assert_live_equals(&daemon, &good);
    let verify = daemon.json(&["verify", "live", "--read-data"]);
    assert_eq!(verify["problems"], serde_json::json!([]), "{verify}");
    assert!(
        proxy.counts().requests > 10,
        "the daemon went through the proxy: {:?}",
        proxy.counts()
    );
    assert!(!blobs_under(&azurite, "packs/").is_empty());
}
