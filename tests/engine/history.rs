//! Cost as history grows (issue 16): a daily backup must cost the same on day 12 as
//! on day 3, whether one process runs throughout (a prune after every backup) or a
//! fresh one starts for each backup (a prune at start-up, the one after the backup
//! cancelled by the shutdown).
//!
//! Counted, not timed: [`CountingStore`] wraps the in-memory store and counts the
//! objects read, listed and written, by area of the repository (`packs`, `index`,
//! `manifests`, ...). The requests a day's backup and prunes make must not depend on
//! how many backups came before; in particular a prune that deletes nothing must not
//! read every backup's manifest and tree (it did, and a fresh daemon's backup waited
//! behind that start-up prune: 1.0 s on day 1, 1.7-1.9 s on day 30).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use envsnap::catalog::Catalog;
use envsnap::repo::Repository;
use envsnap::repo::manifest::Manifest;
use envsnap::store::Store;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use crate::support::repo::*;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Requests by kind and area, e.g. `get packs` → 3.
type Counts = BTreeMap<String, u64>;

/// An in-memory object store that counts requests by kind and repository area.
#[derive(Debug, Default)]
struct CountingStore {
    inner: InMemory,
    counts: Mutex<Counts>,
}

impl CountingStore {
    fn count(&self, kind: &str, location: Option<&ObjectPath>) {
        // Keys are `<host>/<area>/...`; the area says what was read.
        let area = location
            .and_then(|l| l.parts().nth(1))
            .map_or_else(String::new, |p| p.as_ref().to_owned());
        let key = format!("{kind} {area}").trim_end().to_owned();
        *self.counts.lock().unwrap().entry(key).or_default() += 1;
    }

    /// The requests since the last call.
    fn take(&self) -> Counts {
        std::mem::take(&mut *self.counts.lock().unwrap())
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountingStore({})", self.inner)
    }
}

// `ObjectStore` is an `async_trait`; these are its methods written out by hand (the
// crate does not depend on `async-trait`).
impl ObjectStore for CountingStore {
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
        self.count("put", Some(location));
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
        self.count("put", Some(location));
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
        let kind = if options.head { "head" } else { "get" };
        self.count(kind, Some(location));
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
        self.count("get", Some(location));
        self.inner.get_ranges(location, ranges)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.count("delete", None);
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.count("list", prefix);
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
        self.count("list", prefix);
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
        self.count("copy", Some(from));
        self.inner.copy_opts(from, to, options)
    }
}

/// How the daemon lives from one backup to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    /// One process: each backup is followed by a prune that completes.
    LongRunning,
    /// A fresh process for each backup: it prunes at start-up, and the prune after
    /// the backup is cancelled by its shutdown (never runs).
    RestartEachDay,
}

/// The source: 40 files of 24 KiB in four directories.
fn make_source(dir: &Path) {
    for n in 0..40u64 {
        let sub = dir.join(format!("dir{}", n % 4));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("f{n}.bin")), pseudo_random(24 << 10, n)).unwrap();
    }
}

/// A day of churn: one file rewritten, one added.
fn churn(dir: &Path, day: u64) {
    let path = dir.join(format!("dir{}/f{}.bin", day % 4, day % 40));
    std::fs::write(path, pseudo_random(24 << 10, 1000 + day)).unwrap();
    std::fs::write(
        dir.join(format!("new-{day}.bin")),
        pseudo_random(4 << 10, day),
    )
    .unwrap();
}

/// Runs `days` daily backups (after a first one on day 0) and returns, per day, the
/// store requests of that day's prunes and backup.
async fn daily_requests(life: Life, days: u64) -> Vec<Counts> {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    make_source(&source);
    let counting = Arc::new(CountingStore::default());
    let root = Store::new(counting.clone(), "");
    Repository::init(&root, HOST, &keys(false), small_options())
        .await
        .unwrap();
    let catalog = Catalog::in_memory().unwrap();
    let open = || Repository::open(&root, HOST, keys(false), catalog.clone());
    let mut repo = open().await.unwrap();
    let mut parent: Option<Manifest> = None;
    let mut per_day = Vec::new();
    for day in 0..=days {
        if day > 0 {
            churn(&source, day);
        }
        counting.take();
        if life == Life::RestartEachDay {
            repo = open().await.unwrap();
            repo.prune(&[]).await.unwrap();
        }
        let name = format!("day-{day}");
        let manifest = backup_dir(&repo, "prod", &name, &source, parent.as_ref()).await;
        if life == Life::LongRunning {
            repo.prune(&[]).await.unwrap();
        }
        per_day.push(counting.take());
        parent = Some(manifest);
    }
    assert_eq!(
        repo.list_manifests(None).await.unwrap().len() as u64,
        days + 1
    );
    per_day
}

async fn assert_flat(life: Life) {
    let days = daily_requests(life, 12).await;
    let (mut early, mut late) = (days[3].clone(), days[12].clone());
    // The backup reads its parent's tree, which gains a file a day: its stream can
    // cross one more content-defined cut (where depends on the times it holds),
    // one more range read. That is the tree growing, not the history.
    let (early_reads, late_reads) = (early.remove("get packs"), late.remove("get packs"));
    assert!(
        late_reads.unwrap_or(0) <= early_reads.unwrap_or(0) + 1,
        "{life:?}: pack reads grew with history: {early_reads:?}, then {late_reads:?}"
    );
    assert_eq!(
        early, late,
        "{life:?}: the store requests of a day grew with history (day 3, then day 12)"
    );
    // The backup gets its parent in memory here, and a prune that deletes nothing
    // has no reason to read or even list the manifests.
    assert!(
        !late.contains_key("get manifests") && !late.contains_key("list manifests"),
        "{life:?}: a day without deletions read manifests: {late:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_costs_the_same_requests_on_day_12_as_on_day_3_in_a_long_running_process() {
    assert_flat(Life::LongRunning).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_costs_the_same_requests_on_day_12_as_on_day_3_with_a_restart_each_day() {
    assert_flat(Life::RestartEachDay).await;
}
