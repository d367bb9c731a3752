//! The engine on a real S3-compatible server on loopback (s3s-fs, which checks
//! request signatures): the same round trip as on a local directory, through
//! `Store::from_url("s3://...")` and the AWS_* settings operators use.

use envsnap::catalog::Catalog;
use envsnap::repo::Repository;
use envsnap::repo::crypto::Keys;
use envsnap::store::Store;

use crate::support::repo::{HOST, assert_same_tree, backup_dir, pseudo_random, small_options};
use crate::support::s3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_round_trips_through_a_real_s3_server() {
    let Some(binary) = s3::s3s_fs() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_server, port) = s3::start_server(&binary, &dir.path().join("s3"));
    // The settings an operator gives the daemon's environment, ours while `_server`
    // runs (see support::s3).
    unsafe { s3::point_aws_settings_at(port) };
    let root = Store::from_url("s3://backups/fleet").unwrap();
    let keys = Keys::from_secret(b"0123456789abcdef0123456789abcdef-s3");
    Repository::init(&root, HOST, &keys, small_options())
        .await
        .unwrap();
    let repo = Repository::open(&root, HOST, keys.clone(), Catalog::in_memory().unwrap())
        .await
        .unwrap();

    let source = dir.path().join("source");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    std::fs::write(source.join("big.bin"), pseudo_random(2_500_000, 7)).unwrap();
    std::fs::write(source.join("sub/small.txt"), b"hello s3").unwrap();
    let manifest = backup_dir(&repo, "live", "s3-first", &source, None).await;
    assert!(
        dir.path().join("s3/backups/fleet").is_dir(),
        "objects live under the bucket's prefix"
    );

    // A fresh open finds it all through S3 alone.
    let fresh = Repository::open(&root, HOST, keys.clone(), Catalog::in_memory().unwrap())
        .await
        .unwrap();
    fresh.rebuild_index().await.unwrap();
    let target = dir.path().join("restored");
    fresh
        .restore_tree(&manifest, "files:data", &target)
        .await
        .unwrap();
    assert_same_tree(&source, &target);
    let report = fresh
        .verify(&fresh.list_manifests(None).await.unwrap(), true)
        .await
        .unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);

    // A wrong secret is refused by the server, and said so clearly.
    unsafe { std::env::set_var("AWS_SECRET_ACCESS_KEY", "not-the-secret") };
    let wrong = Store::from_url("s3://backups/fleet").unwrap();
    let error = Repository::open(&wrong, HOST, keys, Catalog::in_memory().unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("config"), "{error}");
}
