//! Maintenance and opening: prune, repack, rebuilding the index, and the errors a
//! repository that cannot be opened gives.
//!
//! Prune must reclaim what deleted backups alone held, nothing more, and leave every
//! remaining backup restorable byte for byte. Rebuild must recreate an index that
//! restores and deduplicates, from index objects or, without them, pack trailers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use envsnap::catalog::Catalog;
use envsnap::repo::crypto::Keys;
use envsnap::repo::manifest::Manifest;
use envsnap::repo::{RepoError, Repository};
use envsnap::store::Store;
use tokio_util::sync::CancellationToken;

use crate::support::ports::free_loopback_port;
use crate::support::repo::*;

/// The size of the file replaced between backups: incompressible, so its stored size
/// is about its length.
const BIG: usize = 1536 * 1024;

/// Sizes of the pack objects of the test host, by key.
async fn packs(root: &Store) -> BTreeMap<String, u64> {
    root.scoped(HOST)
        .list("packs")
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect()
}

fn total(packs: &BTreeMap<String, u64>) -> u64 {
    packs.values().sum()
}

/// Replaces `path` with new content (a new inode, as editors and package managers do).
fn replace_file(path: &Path, content: &[u8]) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, content).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// A backed-up state of the source, as observed when it was backed up.
struct Version {
    manifest: Manifest,
    observed: BTreeMap<PathBuf, Observed>,
}

/// Three backups of one directory whose large file is replaced between them.
async fn three_versions(t: &TestRepo) -> Vec<Version> {
    let source = t.scratch("source");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    std::fs::write(
        source.join("notes.txt"),
        b"kept across versions\n".repeat(500),
    )
    .unwrap();
    std::fs::write(source.join("sub/small.bin"), pseudo_random(30_000, 100)).unwrap();
    let mut versions: Vec<Version> = Vec::new();
    for n in 1..=3u64 {
        replace_file(&source.join("big.bin"), &pseudo_random(BIG, n));
        let parent = versions.last().map(|v| &v.manifest);
        let manifest = backup_dir(&t.repo, "prod", &format!("v{n}"), &source, parent).await;
        versions.push(Version {
            manifest,
            observed: observe(&source),
        });
    }
    versions
}

/// Restores `version` into a fresh directory and compares it with what was backed up.
async fn assert_restores(repo: &Repository, version: &Version, target: &Path) {
    repo.restore_tree(&version.manifest, "files:data", target)
        .await
        .unwrap();
    let restored = observe(target);
    assert_eq!(
        version.observed.keys().collect::<Vec<_>>(),
        restored.keys().collect::<Vec<_>>(),
        "{}: restored paths differ",
        version.manifest.meta.name
    );
    for (path, want) in &version.observed {
        if path.as_os_str().is_empty() {
            continue; // the root's metadata is the target's own business
        }
        assert_eq!(want, &restored[path], "{path:?} differs");
    }
}

async fn assert_verifies(repo: &Repository) {
    let manifests = repo.list_manifests(None).await.unwrap();
    let report = repo.verify(&manifests, true).await.unwrap();
    assert!(report.is_ok(), "verify: {:?}", report.problems);
    assert!(report.packs_read > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_the_first_backup_reclaims_its_unique_data() {
    let t = TestRepo::new(StoreKind::LocalDir, false).await;
    let versions = three_versions(&t).await;
    let before = packs(&t.root).await;

    let report = t
        .repo
        .prune(std::slice::from_ref(&versions[0].manifest))
        .await
        .unwrap();
    let after = packs(&t.root).await;
    let shrink = total(&before) - total(&after);
    assert_eq!(report.manifests_deleted, 1);
    assert_eq!(
        report.bytes_freed, shrink,
        "the report tells the bytes freed"
    );
    // The first big file is the only data the first backup held alone.
    assert!(
        shrink >= BIG as u64 * 95 / 100 && shrink <= BIG as u64 + 100_000,
        "prune freed {shrink} bytes; the first backup alone held about {BIG}: {report:?}"
    );

    let left: Vec<_> = t
        .repo
        .list_manifests(None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(
        left,
        vec![
            versions[1].manifest.id.clone(),
            versions[2].manifest.id.clone()
        ]
    );
    for (n, version) in versions.iter().enumerate().skip(1) {
        assert_restores(&t.repo, version, &t.scratch(&format!("restore-{n}"))).await;
    }
    assert_verifies(&t.repo).await;

    // Nothing more to reclaim.
    let again = t.repo.prune(&[]).await.unwrap();
    assert_eq!(
        (again.packs_deleted, again.bytes_freed),
        (0, 0),
        "{again:?}"
    );
    assert_eq!(packs(&t.root).await, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_nothing_reclaims_nothing_and_keeps_every_backup() {
    let t = TestRepo::new(StoreKind::LocalDir, false).await;
    let versions = three_versions(&t).await;
    let before = packs(&t.root).await;

    let report = t.repo.prune(&[]).await.unwrap();
    assert_eq!(report.manifests_deleted, 0);
    assert_eq!(report.packs_deleted, 0, "{report:?}");
    assert_eq!(report.packs_repacked, 0, "{report:?}");
    assert_eq!(report.bytes_freed, 0, "{report:?}");
    assert_eq!(packs(&t.root).await, before, "prune changed the packs");
    assert_eq!(t.repo.list_manifests(None).await.unwrap().len(), 3);
    for (n, version) in versions.iter().enumerate() {
        assert_restores(&t.repo, version, &t.scratch(&format!("restore-{n}"))).await;
    }
    assert_verifies(&t.repo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mostly_dead_pack_is_repacked() {
    let t = TestRepo::new(StoreKind::LocalDir, false).await;
    let source = t.scratch("source");
    std::fs::create_dir_all(&source).unwrap();
    // Together under one pack: the big file dies with the first backup, the small one
    // lives on, so the pack ends up under half live.
    std::fs::write(source.join("big.bin"), pseudo_random(800_000, 1)).unwrap();
    std::fs::write(source.join("keep.bin"), pseudo_random(80_000, 2)).unwrap();
    let first = backup_dir(&t.repo, "prod", "v1", &source, None).await;
    let first_packs = packs(&t.root).await;
    assert_eq!(first_packs.len(), 1, "the fixture fits one pack");
    let first_pack = first_packs.into_keys().next().unwrap();
    std::fs::remove_file(source.join("big.bin")).unwrap();
    let second = backup_dir(&t.repo, "prod", "v2", &source, Some(&first)).await;
    let second = Version {
        manifest: second,
        observed: observe(&source),
    };
    let before = packs(&t.root).await;

    let report = t.repo.prune(std::slice::from_ref(&first)).await.unwrap();
    assert!(report.packs_repacked > 0, "{report:?}");
    assert!(report.packs_written > 0, "{report:?}");
    let after = packs(&t.root).await;
    assert!(
        total(&after) < total(&before) - 700_000,
        "the dead file's bytes are reclaimed: {} -> {}",
        total(&before),
        total(&after)
    );
    assert!(
        !after.contains_key(&first_pack),
        "the repacked pack {first_pack} is gone"
    );
    assert_restores(&t.repo, &second, &t.scratch("restore")).await;
    assert_verifies(&t.repo).await;

    // The rewritten index is right for a fresh catalog too.
    let fresh = t.reopen().await;
    assert_restores(&fresh, &second, &t.scratch("restore-fresh")).await;
    assert_verifies(&fresh).await;
}

/// Two backups, a tree and a stream; returns the tree version and the stream data.
async fn tree_and_stream(t: &TestRepo) -> (Version, Manifest, Vec<u8>) {
    let source = t.scratch("source");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    std::fs::write(source.join("a.bin"), pseudo_random(700_000, 5)).unwrap();
    std::fs::write(source.join("sub/b.bin"), pseudo_random(900_000, 6)).unwrap();
    let tree = backup_dir(&t.repo, "prod", "files", &source, None).await;
    let tree = Version {
        manifest: tree,
        observed: observe(&source),
    };
    let data = pseudo_random(1_200_000, 7);
    let mut writer = t.repo.start_backup(CancellationToken::new()).await.unwrap();
    writer
        .add_stream("db:main", "raw", std::io::Cursor::new(data.clone()))
        .await
        .unwrap();
    let stream = writer.commit(meta("prod", "dump")).await.unwrap();
    (tree, stream, data)
}

async fn assert_stream(repo: &Repository, manifest: &Manifest, data: &[u8]) {
    let mut out = Vec::new();
    repo.read_stream(manifest, "db:main", &mut out)
        .await
        .unwrap();
    assert!(out == data, "the stream part differs");
}

/// A fresh catalog, filled by `rebuild_index`; the repository and its report.
async fn rebuilt(t: &TestRepo) -> (Repository, envsnap::repo::rebuild::RebuildReport) {
    let repo = Repository::open(&t.root, HOST, t.keys.clone(), Catalog::in_memory().unwrap())
        .await
        .unwrap();
    let count = repo.catalog().blocking(|c| c.chunk_count()).await.unwrap();
    assert_eq!(count, 0, "a fresh catalog starts empty");
    let report = repo.rebuild_index().await.unwrap();
    (repo, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_is_rebuilt_from_index_objects_or_pack_trailers() {
    let t = TestRepo::new(StoreKind::Memory, true).await;
    let (tree, stream, data) = tree_and_stream(&t).await;
    let pack_count = packs(&t.root).await.len() as u64;
    assert!(pack_count >= 3, "the fixture spans several packs");
    let chunks = t
        .repo
        .catalog()
        .blocking(|c| c.chunk_count())
        .await
        .unwrap();

    let (repo, report) = rebuilt(&t).await;
    assert_eq!(report.packs, pack_count, "{report:?}");
    assert_eq!(report.chunks, chunks, "{report:?}");
    assert_eq!(report.backups, 2, "{report:?}");
    assert_eq!(report.packs_without_index, 0, "{report:?}");
    assert_restores(&repo, &tree, &t.scratch("from-index")).await;
    assert_stream(&repo, &stream, &data).await;

    // Without any index object, the packs' trailers tell the same.
    let host = t.root.scoped(HOST);
    let index_objects = host.list("index").await.unwrap();
    assert!(!index_objects.is_empty());
    for object in index_objects {
        host.delete(&object.key).await.unwrap();
    }
    let (repo, report) = rebuilt(&t).await;
    assert_eq!(report.packs_without_index, pack_count, "{report:?}");
    assert_eq!(report.packs, pack_count, "{report:?}");
    assert_eq!(report.chunks, chunks, "{report:?}");
    assert_eq!(report.backups, 2, "{report:?}");
    assert_eq!(
        repo.catalog().blocking(|c| c.chunk_count()).await.unwrap(),
        chunks
    );
    assert_restores(&repo, &tree, &t.scratch("from-trailers")).await;
    assert_stream(&repo, &stream, &data).await;
    assert_verifies(&repo).await;

    // The rebuilt index deduplicates: backing up the same data again stores no content.
    let again = backup_dir(&repo, "prod", "again", &t.scratch("source"), None).await;
    let part = again.part("files:data").unwrap();
    assert!(
        part.stored < part.size / 100,
        "stored {} of {} bytes again",
        part.stored,
        part.size
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_key_is_refused() {
    let t = TestRepo::new(StoreKind::Memory, true).await;
    let other = Keys::from_secret(b"another secret, not this repository's key");
    let opened = Repository::open(&t.root, HOST, other, Catalog::in_memory().unwrap()).await;
    assert!(matches!(opened, Err(RepoError::WrongKey)), "{opened:?}");
    let opened = Repository::open(&t.root, HOST, Keys::none(), Catalog::in_memory().unwrap()).await;
    assert!(matches!(opened, Err(RepoError::KeyRequired)), "{opened:?}");

    let plain = TestRepo::new(StoreKind::Memory, false).await;
    let opened =
        Repository::open(&plain.root, HOST, keys(true), Catalog::in_memory().unwrap()).await;
    assert!(
        matches!(opened, Err(RepoError::KeyNotExpected)),
        "{opened:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_format_is_refused_naming_it() {
    let t = TestRepo::new(StoreKind::LocalDir, false).await;
    let host = t.root.scoped(HOST);
    let raw = host.get("config").await.unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    config["format"] = serde_json::json!(99);
    host.put("config", serde_json::to_vec(&config).unwrap().into())
        .await
        .unwrap();

    let opened = Repository::open(&t.root, HOST, Keys::none(), Catalog::in_memory().unwrap()).await;
    let error = opened.expect_err("format 99 must be refused");
    assert!(
        matches!(error, RepoError::UnsupportedFormat { found: 99 }),
        "{error:?}"
    );
    assert!(error.to_string().contains("99"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_repository_is_a_clear_error() {
    let opened = Repository::open(
        &Store::memory(),
        HOST,
        Keys::none(),
        Catalog::in_memory().unwrap(),
    )
    .await;
    assert!(
        matches!(opened, Err(RepoError::NoRepository { .. })),
        "{opened:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_a_clear_error() {
    // A loopback port nobody listens on: connections are refused at once.
    let port = free_loopback_port();
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_allow_http(true)
        .with_bucket_name("bucket")
        .with_region("us-east-1")
        .with_access_key_id("x")
        .with_secret_access_key("y")
        .with_retry(object_store::RetryConfig {
            max_retries: 0,
            retry_timeout: Duration::from_secs(2),
            ..Default::default()
        })
        .build()
        .unwrap();
    let root = Store::new(Arc::new(s3), "prefix");
    // Refused connections are retried for `store.retry_timeout`, then reported.
    root.configure(&transfer_settings(Duration::from_secs(3)));

    let opened = tokio::time::timeout(
        Duration::from_secs(15),
        Repository::open(&root, HOST, Keys::none(), Catalog::in_memory().unwrap()),
    )
    .await
    .expect("opening an unreachable store must fail quickly, not hang");
    let error = opened.expect_err("an unreachable store cannot be opened");
    let message = error.to_string();
    assert!(
        matches!(&error, RepoError::Store(e) if e.is_transient()),
        "an unreachable store is a transient store error: {error:?}"
    );
    assert!(message.contains("unreachable"), "{message}");
    assert!(message.contains("config"), "names the object: {message}");
    assert!(
        message.contains("of retries: store.retry_timeout"),
        "says it was retried: {message}"
    );
}

/// An unmounted backup disk: the local store's directory is gone. Backups and prune
/// refuse to write (nothing is created again at its path), and a restart with the
/// same catalog refuses to make a new, empty repository there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_lost_its_repository_is_an_error_never_a_new_repository() {
    let test = TestRepo::new(StoreKind::LocalDir, false).await;
    let data = test.scratch("data");
    std::fs::write(data.join("a.txt"), b"hello").unwrap();
    backup_dir(&test.repo, "live", "b1", &data, None).await;
    let store_dir = test.dir.path().join("store");
    std::fs::remove_dir_all(&store_dir).unwrap();

    let lost = "lost its repository (no config object): is it mounted?";
    let writing = test
        .repo
        .start_backup(CancellationToken::new())
        .await
        .err()
        .expect("a backup into a lost store is refused");
    assert!(writing.to_string().contains(lost), "{writing}");
    let pruning = test.repo.prune(&[]).await.unwrap_err();
    assert!(pruning.to_string().contains(lost), "{pruning}");
    assert!(
        !store_dir.exists(),
        "the store's directory was created again"
    );

    let restarted = Repository::open_or_init(
        &test.root,
        HOST,
        test.keys.clone(),
        test.repo.catalog().clone(),
        small_options(),
    )
    .await;
    assert!(
        matches!(restarted, Err(RepoError::RepositoryLost { .. })),
        "{restarted:?}"
    );
    assert!(!store_dir.exists(), "a new repository was made");
}

/// A write of more new chunks than it indexes at once (65,536) indexes them as it
/// goes: one backup leaves several index objects, the catalog owes a sweep from the
/// first early index on (a write failing after it must leave its packs to prune), the
/// next prune marks, deletes nothing and clears it, and the backup restores whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_write_indexes_as_it_goes_and_the_next_prune_marks() {
    let t = TestRepo::new(StoreKind::LocalDir, false).await;
    let source = t.scratch("source");
    for d in 0..70 {
        let dir = source.join(format!("d{d:02}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..1000 {
            // Incompressible, so the test repository's 1 MiB packs fill: chunks are
            // indexed early as packs complete.
            let content = pseudo_random(200, d * 1000 + f + 1);
            std::fs::write(dir.join(format!("{f}")), content).unwrap();
        }
    }
    let manifest = backup_dir(&t.repo, "live", "large", &source, None).await;
    let index_objects = t.root.scoped(HOST).list("index").await.unwrap().len();
    assert!(index_objects >= 2, "{index_objects} index objects");

    let report = t.repo.prune(&[]).await.unwrap();
    assert!(
        report.marked,
        "a sweep is owed after an early index: {report:?}"
    );
    assert_eq!(report.packs_deleted, 0, "{report:?}");
    let again = t.repo.prune(&[]).await.unwrap();
    assert!(!again.marked, "the prune that marked cleared it: {again:?}");

    let restored = t.dir.path().join("restored");
    t.repo
        .restore_tree(&manifest, "files:data", &restored)
        .await
        .unwrap();
    assert_same_tree(&source, &restored);
    assert_verifies(&t.repo).await;
}
