//! Crash safety: a backup whose store fails at each write in turn.
//!
//! [`FaultyStore`] wraps the in-memory store and fails the Nth put. A backup makes a
//! known number of puts (its writer lock, its packs, the index object, the manifest);
//! for every N up to that number, a backup fails at put N, and then a fresh open of the
//! store (new catalog, index rebuilt from the store) must find only complete backups,
//! all of them verifiable and restorable, and prune must bring the store back to exactly
//! the packs the complete backups need.
//!
//! Two kinds of failure are injected: a *transient* one (only put N fails; the writer
//! may clean up after itself) and a *crash* (from put N on, every put and delete fails,
//! so nothing is cleaned up, as when the process dies; prune must reclaim the orphans).

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use envsnap::catalog::Catalog;
use envsnap::repo::archiver::TreeOptions;
use envsnap::repo::manifest::Manifest;
use envsnap::repo::{RepoError, Repository};
use envsnap::store::Store;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tokio_util::sync::CancellationToken;

use crate::support::repo::*;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How an injected fault behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Only the Nth put fails; the writer can still clean up.
    Transient,
    /// From the Nth put on, every put and delete fails: the writer "died" there.
    Crash,
}

/// An in-memory object store that fails the Nth put once armed.
#[derive(Debug)]
struct FaultyStore {
    inner: Arc<InMemory>,
    /// Puts since the store was last armed.
    puts: AtomicU64,
    /// The put (1-based) that fails; 0 when disarmed.
    fail_at: AtomicU64,
    crash: AtomicBool,
    triggered: AtomicBool,
}

impl FaultyStore {
    fn new(inner: Arc<InMemory>) -> Self {
        FaultyStore {
            inner,
            puts: AtomicU64::new(0),
            fail_at: AtomicU64::new(0),
            crash: AtomicBool::new(false),
            triggered: AtomicBool::new(false),
        }
    }

    /// Starts counting puts afresh; put `n` (if not 0) will fail.
    fn arm(&self, n: u64, fault: Fault) {
        self.puts.store(0, Ordering::SeqCst);
        self.triggered.store(false, Ordering::SeqCst);
        self.crash.store(fault == Fault::Crash, Ordering::SeqCst);
        self.fail_at.store(n, Ordering::SeqCst);
    }

    fn puts(&self) -> u64 {
        self.puts.load(Ordering::SeqCst)
    }

    fn triggered(&self) -> bool {
        self.triggered.load(Ordering::SeqCst)
    }

    fn dead(&self) -> bool {
        self.triggered() && self.crash.load(Ordering::SeqCst)
    }

    fn injected(operation: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "FaultyStore",
            source: format!("injected failure of {operation}").into(),
        }
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

// `ObjectStore` is an `async_trait`; these are its methods written out by hand (the
// crate does not depend on `async-trait`).
impl ObjectStore for FaultyStore {
    fn put_opts<'life0, 'life1, 'async_trait>(
        &'life0 self,
        location: &'life1 ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> BoxFuture<'async_trait, object_store::Result<PutResult>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        let n = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
        let fail_at = self.fail_at.load(Ordering::SeqCst);
        if self.dead() || (fail_at != 0 && n == fail_at) {
            self.triggered.store(true, Ordering::SeqCst);
            return Box::pin(async { Err(Self::injected("put")) });
        }
        self.inner.put_opts(location, payload, opts)
    }

    fn put_multipart_opts<'life0, 'life1, 'async_trait>(
        &'life0 self,
        location: &'life1 ObjectPath,
        opts: PutMultipartOptions,
    ) -> BoxFuture<'async_trait, object_store::Result<Box<dyn MultipartUpload>>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        if self.dead() {
            return Box::pin(async { Err(Self::injected("multipart put")) });
        }
        self.inner.put_multipart_opts(location, opts)
    }

    fn get_opts<'life0, 'life1, 'async_trait>(
        &'life0 self,
        location: &'life1 ObjectPath,
        options: GetOptions,
    ) -> BoxFuture<'async_trait, object_store::Result<GetResult>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        self.inner.get_opts(location, options)
    }

    fn get_ranges<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        location: &'life1 ObjectPath,
        ranges: &'life2 [Range<u64>],
    ) -> BoxFuture<'async_trait, object_store::Result<Vec<bytes::Bytes>>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        self.inner.get_ranges(location, ranges)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        if self.dead() {
            return locations.map(|_| Err(Self::injected("delete"))).boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_delimiter<'life0, 'life1, 'async_trait>(
        &'life0 self,
        prefix: Option<&'life1 ObjectPath>,
    ) -> BoxFuture<'async_trait, object_store::Result<ListResult>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        self.inner.list_with_delimiter(prefix)
    }

    fn copy_opts<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        from: &'life1 ObjectPath,
        to: &'life2 ObjectPath,
        options: CopyOptions,
    ) -> BoxFuture<'async_trait, object_store::Result<()>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        if self.dead() {
            return Box::pin(async { Err(Self::injected("copy")) });
        }
        self.inner.copy_opts(from, to, options)
    }
}

/// A repository on a faulty store, with one complete backup (`first`) in it.
struct Scenario {
    inner: Arc<InMemory>,
    /// The store through the faults; its clones share its request settings.
    root: Store,
    faulty: Arc<FaultyStore>,
    repo: Repository,
    first: Manifest,
    /// The pack keys the first backup left: all that a pruned store needs.
    first_packs: BTreeSet<String>,
    first_source: PathBuf,
    /// What the second backup (the one that fails) stores.
    second_source: PathBuf,
    second_stream: Vec<u8>,
    dir: tempfile::TempDir,
}

/// Bytes of the stream part of the second backup: with the tree, about 4.5 MiB of
/// incompressible data, so always 5 packs of 1 MiB (never a near-empty last one).
const STREAM_LEN: usize = 3 << 20;

impl Scenario {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let first_source = dir.path().join("first");
        std::fs::create_dir_all(first_source.join("sub")).unwrap();
        std::fs::write(first_source.join("a.bin"), pseudo_random(100_000, 1)).unwrap();
        std::fs::write(first_source.join("sub/b.bin"), pseudo_random(60_000, 2)).unwrap();
        let second_source = dir.path().join("second");
        std::fs::create_dir_all(second_source.join("nested")).unwrap();
        for (i, name) in ["one.bin", "two.bin", "nested/three.bin"]
            .iter()
            .enumerate()
        {
            std::fs::write(
                second_source.join(name),
                pseudo_random(512 * 1024, 10 + i as u64),
            )
            .unwrap();
        }
        let second_stream = pseudo_random(STREAM_LEN, 20);

        let inner = Arc::new(InMemory::new());
        let faulty = Arc::new(FaultyStore::new(inner.clone()));
        let root = Store::new(faulty.clone(), "");
        // Retries off: each injected failure stands for one that outlasts them.
        root.configure(&transfer_settings(Duration::ZERO));
        Repository::init(&root, HOST, &keys(false), small_options())
            .await
            .unwrap();
        let repo = Repository::open(&root, HOST, keys(false), Catalog::in_memory().unwrap())
            .await
            .unwrap();
        let first = backup_dir(&repo, "prod", "first", &first_source, None).await;
        let first_packs = pack_keys(&inner).await;
        assert!(!first_packs.is_empty());
        Scenario {
            inner,
            root,
            faulty,
            repo,
            first,
            first_packs,
            first_source,
            second_source,
            second_stream,
            dir,
        }
    }

    /// Writes the second backup (a tree part and a stream part) through `repo`.
    async fn second_backup(&self, repo: &Repository) -> Result<Manifest, RepoError> {
        let mut writer = repo.start_backup(CancellationToken::new()).await?;
        let tree = writer
            .add_tree(
                "files:data",
                self.second_source.clone(),
                TreeOptions::default(),
            )
            .await
            .map(|_| ());
        let stream = match tree {
            Ok(()) => writer
                .add_stream(
                    "db:main",
                    "raw",
                    std::io::Cursor::new(self.second_stream.clone()),
                )
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        match stream {
            Ok(()) => writer.commit(meta("prod", "second")).await,
            Err(e) => {
                // A dead process cleans nothing up; a live one aborts its write.
                if !self.faulty.dead() {
                    writer.abort().await;
                }
                Err(e)
            }
        }
    }

    /// The repository opened afresh on the store without faults, index rebuilt.
    async fn reopen(&self) -> Repository {
        let root = Store::new(self.inner.clone(), "");
        let repo = Repository::open(&root, HOST, keys(false), Catalog::in_memory().unwrap())
            .await
            .unwrap();
        repo.rebuild_index().await.unwrap();
        repo
    }

    fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The keys of every pack of the test host in `inner`.
async fn pack_keys(inner: &Arc<InMemory>) -> BTreeSet<String> {
    Store::new(inner.clone(), "")
        .scoped(HOST)
        .list("packs")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

async fn keys_under(inner: &Arc<InMemory>, dir: &str) -> Vec<String> {
    Store::new(inner.clone(), "")
        .scoped(HOST)
        .list(dir)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

async fn assert_restores_tree(repo: &Repository, manifest: &Manifest, source: &Path, to: &Path) {
    repo.restore_tree(manifest, "files:data", to).await.unwrap();
    assert_same_tree(source, to);
}

/// Puts the second backup makes when nothing fails, checked against its structure.
async fn clean_run_puts() -> u64 {
    let scenario = Scenario::new().await;
    scenario.faulty.arm(0, Fault::Transient);
    let manifest = scenario.second_backup(&scenario.repo).await.unwrap();
    let puts = scenario.faulty.puts();
    let packs = pack_keys(&scenario.inner).await.len() - scenario.first_packs.len();
    assert!(
        packs >= 4,
        "the backup should span several packs, made {packs}"
    );
    // The writer lock, the packs, the index object, the manifest.
    assert_eq!(puts, 1 + packs as u64 + 1 + 1, "puts of a clean backup");
    let mut out = Vec::new();
    scenario
        .repo
        .read_stream(&manifest, "db:main", &mut out)
        .await
        .unwrap();
    assert!(out == scenario.second_stream, "the stream part round-trips");
    puts
}

/// After a failed backup: only complete backups, all restorable; prune restores the
/// store to exactly the first backup's packs. Returns the orphan packs prune removed.
async fn check_after_failure(scenario: &Scenario, n: u64, fault: Fault) -> usize {
    let context = format!("fault {fault:?} at put {n}");
    let repo = scenario.reopen().await;
    let manifests = repo.list_manifests(None).await.unwrap();
    let ids: Vec<_> = manifests.iter().map(|m| m.id.clone()).collect();
    assert_eq!(
        ids,
        vec![scenario.first.id.clone()],
        "{context}: only the complete backup is listed"
    );
    let report = repo.verify(&manifests, true).await.unwrap();
    assert!(report.is_ok(), "{context}: {:?}", report.problems);
    let target = scenario.scratch(&format!("restore-{fault:?}-{n}"));
    assert_restores_tree(&repo, &manifests[0], &scenario.first_source, &target).await;

    let orphans = pack_keys(&scenario.inner)
        .await
        .difference(&scenario.first_packs)
        .count();
    repo.prune(&[]).await.unwrap();
    assert_eq!(
        pack_keys(&scenario.inner).await,
        scenario.first_packs,
        "{context}: after prune the store holds exactly the complete backup's packs"
    );
    assert!(
        keys_under(&scenario.inner, "locks").await.is_empty(),
        "{context}: prune removes the dead writer's lock object"
    );
    let rebuilt = scenario.reopen().await.rebuild_index().await.unwrap();
    assert_eq!(
        rebuilt.packs_without_index, 0,
        "{context}: every pack indexed"
    );
    assert_eq!(
        rebuilt.packs,
        scenario.first_packs.len() as u64,
        "{context}"
    );
    let report = repo.verify(&manifests, true).await.unwrap();
    assert!(
        report.is_ok(),
        "{context}: after prune: {:?}",
        report.problems
    );
    let target = scenario.scratch(&format!("restore-{fault:?}-{n}-pruned"));
    assert_restores_tree(&repo, &manifests[0], &scenario.first_source, &target).await;
    orphans
}

async fn fail_at_every_put(fault: Fault) {
    let total = clean_run_puts().await;
    let mut orphans = 0;
    for n in 1..=total {
        let scenario = Scenario::new().await;
        scenario.faulty.arm(n, fault);
        let result = scenario.second_backup(&scenario.repo).await;
        assert!(
            scenario.faulty.triggered(),
            "{fault:?} at put {n} was not reached"
        );
        let error = result.expect_err("a backup whose store fails must fail");
        assert!(
            error.to_string().contains("injected failure"),
            "{fault:?} at put {n}: the error names the cause: {error}"
        );
        orphans += check_after_failure(&scenario, n, fault).await;
    }
    if fault == Fault::Crash {
        // A dead writer cleans nothing up: prune must have had orphans to reclaim.
        assert!(orphans > 0, "no crash left an orphan pack");
    }
}

/// With retries on (the daemon's default), a put that fails once is attempted
/// again: the backup completes, whole, wherever the failure fell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_that_fails_once_is_retried_and_the_backup_completes() {
    let total = clean_run_puts().await;
    for n in [1, total / 2, total] {
        let scenario = Scenario::new().await;
        scenario
            .root
            .configure(&transfer_settings(Duration::from_secs(30)));
        scenario.faulty.arm(n, Fault::Transient);
        let manifest = scenario.second_backup(&scenario.repo).await.unwrap();
        assert!(
            scenario.faulty.triggered(),
            "the failure at put {n} was reached"
        );
        let fresh = scenario.reopen().await;
        let listed = fresh.list_manifests(None).await.unwrap();
        assert_eq!(listed.len(), 2, "put {n}: both backups listed");
        let report = fresh.verify(&listed, true).await.unwrap();
        assert!(report.is_ok(), "put {n}: {:?}", report.problems);
        let target = scenario.scratch(&format!("retried-{n}"));
        assert_restores_tree(&fresh, &manifest, &scenario.second_source, &target).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_at_any_put_leaves_a_consistent_repository() {
    fail_at_every_put(Fault::Transient).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_put_leaves_a_consistent_repository() {
    fail_at_every_put(Fault::Crash).await;
}

/// The process whose backup failed prunes through its own catalog, which knew the
/// store clean before: the failure must have recorded the sweep it owes (a prune
/// marks only then), or the packs a failure after the index object leaves, indexed
/// but referenced by no backup, would stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_whose_backup_failed_reclaims_its_orphans_itself() {
    let total = clean_run_puts().await;
    for n in 1..=total {
        let scenario = Scenario::new().await;
        let settled = scenario.repo.prune(&[]).await.unwrap();
        assert!(settled.marked, "a new catalog owes a sweep");
        assert!(!scenario.repo.prune(&[]).await.unwrap().marked);
        scenario.faulty.arm(n, Fault::Transient);
        assert!(scenario.second_backup(&scenario.repo).await.is_err());
        scenario.faulty.arm(0, Fault::Transient);
        scenario.repo.prune(&[]).await.unwrap();
        assert_eq!(
            pack_keys(&scenario.inner).await,
            scenario.first_packs,
            "transient failure at put {n}: prune leaves exactly the first backup's packs"
        );
    }
}

/// A failed backup is invisible to the process that wrote it as well as to a fresh
/// open, whether the process lives on or dies at the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_backup_leaves_no_manifest() {
    let total = clean_run_puts().await;
    for fault in [Fault::Transient, Fault::Crash] {
        for n in 1..=total {
            let scenario = Scenario::new().await;
            scenario.faulty.arm(n, fault);
            assert!(scenario.second_backup(&scenario.repo).await.is_err());
            let fresh = scenario.reopen().await;
            for repo in [&scenario.repo, &fresh] {
                let listed: Vec<_> = repo
                    .list_manifests(None)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|m| m.id)
                    .collect();
                assert_eq!(
                    listed,
                    vec![scenario.first.id.clone()],
                    "{fault:?} at put {n}: the failed backup left a manifest"
                );
            }
            let stored = Store::new(scenario.inner.clone(), "").scoped(HOST);
            assert_eq!(
                stored.list("manifests").await.unwrap().len(),
                1,
                "{fault:?} at put {n}: one manifest object"
            );
        }
    }
}

/// After a failed backup, the same process (same catalog) backs up the same data
/// again: the retry must not lean on chunks of the failed write, which it deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_failed_backup_is_complete() {
    let total = clean_run_puts().await;
    for n in 1..=total {
        let scenario = Scenario::new().await;
        scenario.faulty.arm(n, Fault::Transient);
        assert!(scenario.second_backup(&scenario.repo).await.is_err());

        scenario.faulty.arm(0, Fault::Transient);
        let retried = scenario.second_backup(&scenario.repo).await.unwrap();
        let fresh = scenario.reopen().await;
        let manifests = fresh.list_manifests(None).await.unwrap();
        assert_eq!(manifests.len(), 2, "put {n}");
        let report = fresh.verify(&manifests, true).await.unwrap();
        assert!(
            report.is_ok(),
            "failure at put {n}, then a retry in the same process: {:?}",
            report.problems
        );
        let target = scenario.scratch(&format!("retried-{n}"));
        assert_restores_tree(&fresh, &retried, &scenario.second_source, &target).await;
        let mut out = Vec::new();
        fresh
            .read_stream(&retried, "db:main", &mut out)
            .await
            .unwrap();
        assert!(
            out == scenario.second_stream,
            "put {n}: stream part differs"
        );
    }
}
