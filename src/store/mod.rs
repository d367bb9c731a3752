//! The object store: where backup data lives.
//!
//! This is the only module that touches `object_store`. A [`Store`] is a store opened
//! from a URL (`file:///var/backups/envsnap`, `memory:`, `s3://bucket/prefix`, ...)
//! narrowed to one host's prefix. Everything above it names objects by keys relative to
//! that prefix (`config`, `packs/ab/<id>`, ...) and sees [`StoreError`], which tells a
//! missing object from a transient failure (worth retrying) and a permanent one.
//!
//! Objects are immutable: the repository writes each key once and never rewrites it,
//! so a reader never sees a half-written object (local puts go through a temporary
//! file and a rename; S3 puts are atomic).
//!
//! How requests behave is the daemon's to set ([`TransferSettings`], changed by a
//! reload and shared by every clone of a store): how many the engine keeps in flight
//! ([`Store::concurrency`]), how long a transient failure is retried
//! (`store/retry.rs`), and how fast data may move each way (`store/limit.rs`).
//! Every operation here goes through the retry loop; puts and ranged reads wait for
//! their slot under the limit before they go, whole reads after they arrived.
//!
//! With `store.lock` (S3 Object Lock, `locking.rs`), puts of a [`Store::retaining`]
//! clone carry a retention date, and [`Store::original_versions`] reads a host's
//! objects as envsnap wrote them, underneath anything written over them later.

mod error;
pub mod limit;
mod locking;
pub mod object_lock;
mod policy;
mod retry;
mod versions;

pub use error::StoreError;
pub use object_lock::LockMode;
pub use policy::LockPolicy;
pub use retry::retries_total;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

use limit::{RateSchedule, Throttle};
use retry::{inner_retry_config, retrying};

/// Requests in flight by default: fills a link with 20-50 ms round trips.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// How long a failing request is retried by default.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(300);
/// Bytes of whole packs the engine holds in flight at once (uploads, pack reads):
/// bounds memory whatever the concurrency.
const PACK_BYTES_IN_FLIGHT: u64 = 64 << 20;

/// How the daemon's requests to the store behave (`[store]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferSettings {
    pub concurrency: usize,
    pub retry_timeout: Duration,
    pub upload_limit: RateSchedule,
    pub download_limit: RateSchedule,
    /// The zone of the limits' time windows (`daemon.timezone`).
    pub timezone: chrono_tz::Tz,
}

/// The settings in force, shared by every clone of a store.
#[derive(Debug)]
struct Transfer {
    concurrency: AtomicUsize,
    retry_timeout_ms: AtomicU64,
    upload: Throttle,
    download: Throttle,
    /// Cancelled when the daemon stops: no more retries.
    stop: tokio_util::sync::CancellationToken,
}

impl Default for Transfer {
    fn default() -> Self {
        Transfer {
            concurrency: AtomicUsize::new(DEFAULT_CONCURRENCY),
            retry_timeout_ms: AtomicU64::new(DEFAULT_RETRY_TIMEOUT.as_millis() as u64),
            upload: Throttle::default(),
            download: Throttle::default(),
            stop: Default::default(),
        }
    }
}

/// A listed object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// The key relative to the store's prefix.
    pub key: String,
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

/// An object store narrowed to one prefix (one host's repository).
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// For a local directory store: its root on disk (for cleaning partial uploads).
    local_root: Option<std::path::PathBuf>,
    /// The same store as a URL signer, when it can sign (S3, GCS, Azure).
    signer: Option<Arc<dyn Signer>>,
    transfer: Arc<Transfer>,
    /// The bucket's Object Lock, when `store.lock` is set (`locking.rs`).
    lock: Option<Arc<policy::Locking>>,
    /// The retention this clone's puts carry ([`Store::retaining`]).
    retain: Option<policy::Retain>,
    /// In the recovery view ([`Store::original_versions`]): the versions it serves.
    pinned: Option<Arc<versions::PinnedVersions>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({}/{})", self.inner, self.prefix)
    }
}

impl Store {
    /// Wraps any object store; `prefix` is the repository's root inside it.
    pub fn new(inner: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        Store {
            inner,
            prefix: ObjectPath::from(prefix),
            local_root: None,
            signer: None,
            transfer: Arc::default(),
            lock: None,
            retain: None,
            pinned: None,
        }
    }

    /// An in-memory store, for tests.
    pub fn memory() -> Self {
        Store::new(Arc::new(object_store::memory::InMemory::new()), "")
    }

    /// Opens the store a URL names. `file://` directories are created if missing.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if parsed.scheme() == "file" {
            let dir = parsed
                .to_file_path()
                .map_err(|()| bad("not an absolute local path".into()))?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
            let local = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| bad(e.to_string()))?;
            return Ok(Store {
                local_root: Some(dir),
                ..Store::new(Arc::new(local), "")
            });
        }
        if parsed.scheme() == "memory" {
            return Ok(Store::memory());
        }
        if let Some(signing) = signing_store(&parsed).map_err(|e| bad(e.to_string()))? {
            let prefix =
                ObjectPath::from_url_path(parsed.path()).map_err(|e| bad(e.to_string()))?;
            return Ok(Store {
                signer: Some(signing.1),
                prefix,
                ..Store::new(signing.0, "")
            });
        }
        let (inner, prefix) = object_store::parse_url_opts(&parsed, settings_from_env())
            .map_err(|e| bad(e.to_string()))?;
        Ok(Store {
            prefix,
            ..Store::new(Arc::from(inner), "")
        })
    }

    /// Whether the store can sign URLs ([`Store::signed_get_url`]).
    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    /// A URL that lets anyone holding it GET `key` for `ttl`, signed with the store's
    /// credentials (which it does not reveal).
    pub async fn signed_get_url(&self, key: &str, ttl: Duration) -> Result<String, StoreError> {
        let signer = self.signer.as_ref().ok_or_else(|| StoreError::Permanent {
            key: key.to_owned(),
            reason: "this store cannot sign URLs".into(),
        })?;
        signer
            .signed_url(object_store::signer::Method::GET, &self.path(key), ttl)
            .await
            .map(|url| url.to_string())
            .map_err(|e| StoreError::classify(key, e))
    }

    /// A writer that uploads `key` in parts as it is written (multipart where the
    /// store has it): memory stays bounded whatever the size. The object exists once
    /// `shutdown` returns.
    pub fn writer(&self, key: &str) -> object_store::buffered::BufWriter {
        object_store::buffered::BufWriter::new(self.inner.clone(), self.path(key))
    }

    /// The same store, narrowed further to `sub` (e.g. one host's directory).
    pub fn scoped(&self, sub: &str) -> Self {
        Store {
            prefix: self.path(sub),
            ..self.clone()
        }
    }

    fn path(&self, key: &str) -> ObjectPath {
        let mut path = self.prefix.clone();
        for part in key.split('/').filter(|p| !p.is_empty()) {
            path = path.join(part);
        }
        path
    }

    fn relative_key(&self, path: &ObjectPath) -> String {
        match path.prefix_match(&self.prefix) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_owned())
                .collect::<Vec<_>>()
                .join("/"),
            None => path.to_string(),
        }
    }

    /// Puts the settings in force: at start-up and on every reload. Running jobs
    /// follow new limits at once; concurrency applies from their next step.
    pub fn configure(&self, settings: &TransferSettings) {
        let transfer = &self.transfer;
        transfer
            .concurrency
            .store(settings.concurrency.max(1), Ordering::Relaxed);
        transfer
            .retry_timeout_ms
            .store(settings.retry_timeout.as_millis() as u64, Ordering::Relaxed);
        transfer
            .upload
            .set(settings.upload_limit.clone(), settings.timezone);
        transfer
            .download
            .set(settings.download_limit.clone(), settings.timezone);
    }

    /// Requests the engine keeps in flight at once (`store.concurrency`).
    pub fn concurrency(&self) -> usize {
        self.transfer.concurrency.load(Ordering::Relaxed)
    }

    /// Whole packs of `pack_size` the engine holds in flight at once: the
    /// concurrency, within 64 MiB of pack bytes (at least one).
    pub fn packs_in_flight(&self, pack_size: u64) -> usize {
        let by_memory = (PACK_BYTES_IN_FLIGHT / pack_size.max(1)).max(1) as usize;
        self.concurrency().min(by_memory)
    }

    /// The limits in force now, in bytes per second: (upload, download).
    pub fn limits_now(&self) -> (Option<u64>, Option<u64>) {
        (
            self.transfer.upload.rate_now(),
            self.transfer.download.rate_now(),
        )
    }

    /// Runs one store operation through the retry loop.
    async fn retried<T, Fut>(&self, attempt: impl FnMut() -> Fut) -> Result<T, StoreError>
    where
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let timeout = Duration::from_millis(self.transfer.retry_timeout_ms.load(Ordering::Relaxed));
        retrying(timeout, &self.transfer.stop, attempt).await
    }

    /// From now on a failed request is not retried (the daemon is stopping), and
    /// requests waiting to be retried fail now.
    pub fn stop_retrying(&self) {
        self.transfer.stop.cancel();
    }

    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.check_local_root(key)?;
        self.transfer.upload.pass(data.len() as u64).await;
        let path = self.path(key);
        if let Some(locked) = self.put_locked(key, &path, &data).await {
            return locked;
        }
        self.retried(|| async {
            self.inner
                .put(&path, PutPayload::from_bytes(data.clone()))
                .await
                .map(|_| ())
                .map_err(|e| StoreError::classify(key, e))
        })
        .await
    }

    /// A local store whose directory is gone (an unmounted disk) is not created
    /// again by a write: object_store would make every missing directory.
    fn check_local_root(&self, key: &str) -> Result<(), StoreError> {
        match &self.local_root {
            Some(root) if !root.is_dir() => Err(StoreError::Permanent {
                key: key.to_owned(),
                reason: format!(
                    "the store's directory {} is gone: is it mounted?",
                    root.display()
                ),
            }),
            _ => Ok(()),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let bytes = self
            .retried(|| async {
                let classify = |e| StoreError::classify(key, e);
                let result = self.inner.get(&self.path(key)).await.map_err(classify)?;
                result.bytes().await.map_err(classify)
            })
            .await?;
        self.transfer.download.pass(bytes.len() as u64).await;
        Ok(bytes)
    }

    /// The object at `key` if it is at most `max` bytes, in one request; `None` for a
    /// larger one, whose body is not read.
    pub async fn get_capped(&self, key: &str, max: u64) -> Result<Option<Bytes>, StoreError> {
        let bytes = self
            .retried(|| async {
                let classify = |e| StoreError::classify(key, e);
                let result = self.inner.get(&self.path(key)).await.map_err(classify)?;
                if result.meta.size > max {
                    return Ok(None);
                }
                result.bytes().await.map(Some).map_err(classify)
            })
            .await?;
        let size = bytes.as_ref().map_or(0, |b| b.len() as u64);
        self.transfer.download.pass(size).await;
        Ok(bytes)
    }

    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.transfer
            .download
            .pass(range.end.saturating_sub(range.start))
            .await;
        let path = self.path(key);
        self.retried(|| async {
            self.inner
                .get_range(&path, range.clone())
                .await
                .map_err(|e| StoreError::classify(key, e))
        })
        .await
    }

    pub async fn size(&self, key: &str) -> Result<u64, StoreError> {
        let path = self.path(key);
        self.retried(|| async {
            self.inner
                .head(&path)
                .await
                .map(|meta| meta.size)
                .map_err(|e| StoreError::classify(key, e))
        })
        .await
    }

    /// Deletes an object; deleting one that is already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key);
        self.retried(|| async {
            match self.inner.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(StoreError::classify(key, e)),
            }
        })
        .await
    }

    /// The names of the directories right below `dir` (`""`: the top), in no order.
    pub async fn list_dirs(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        let prefix = self.path(dir);
        let listed = self
            .retried(|| async {
                self.inner
                    .list_with_delimiter(Some(&prefix))
                    .await
                    .map_err(|e| StoreError::classify(dir, e))
            })
            .await?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
    }

    /// Every object whose key starts with `dir/`, recursively.
    pub async fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let prefix = self.path(dir);
        let metas: Vec<_> = self
            .retried(|| async {
                self.inner
                    .list(Some(&prefix))
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|e| StoreError::classify(dir, e))
            })
            .await?;
        Ok(metas
            .into_iter()
            .map(|meta| ObjectInfo {
                key: self.relative_key(&meta.location),
                size: meta.size,
                last_modified: meta.last_modified,
            })
            .collect())
    }
}

impl Store {
    /// Removes what interrupted uploads left under `dir`, modified before `before`.
    ///
    /// A local directory store writes each object to `<name>#<digits>` and renames it
    /// into place; a process killed mid-write leaves that file behind, invisible to
    /// listings. (Object stores discard unfinished uploads themselves.) Returns the
    /// number of bytes removed.
    pub fn remove_partial_uploads(&self, dir: &str, before: chrono::DateTime<chrono::Utc>) -> u64 {
        let Some(root) = &self.local_root else {
            return 0;
        };
        let mut base = root.clone();
        for part in self.path(dir).parts() {
            base.push(part.as_ref());
        }
        let mut freed = 0;
        let mut pending = vec![base];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    pending.push(entry.path());
                    continue;
                }
                let name = entry.file_name();
                let partial =
                    name.to_str()
                        .and_then(|n| n.rsplit_once('#'))
                        .is_some_and(|(_, suffix)| {
                            !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())
                        });
                let modified = meta.modified().map(chrono::DateTime::<chrono::Utc>::from);
                if partial
                    && modified.is_ok_and(|m| m < before)
                    && std::fs::remove_file(entry.path()).is_ok()
                {
                    freed += meta.len();
                }
            }
        }
        freed
    }
}

/// S3, GCS and Azure stores built directly, so that the same object also serves as
/// a URL signer (`parse_url_opts` hides it behind `dyn ObjectStore`). Credentials and
/// options come from the environment, as the cloud SDKs read it (`AWS_*`,
/// `GOOGLE_*`, `AZURE_*`).
type SigningStore = (Arc<dyn ObjectStore>, Arc<dyn Signer>);

fn signing_store(url: &Url) -> object_store::Result<Option<SigningStore>> {
    fn both<T: ObjectStore + Signer>(store: T) -> Option<SigningStore> {
        let store = Arc::new(store);
        Some((store.clone(), store))
    }
    Ok(match url.scheme() {
        "s3" | "s3a" => both(
            object_store::aws::AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .with_retry(inner_retry_config())
                .build()?,
        ),
        "gs" => both(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(inner_retry_config())
                .build()?,
        ),
        "az" | "azure" | "adl" | "abfs" | "abfss" => both(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(inner_retry_config())
                .build()?,
        ),
        _ => None,
    })
}

/// The store settings operators give the daemon's environment (`AWS_*`,
/// `GOOGLE_*`, `AZURE_*`), as `object_store` takes them.
pub(crate) fn settings_from_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars().filter(|(name, _)| {
        ["AWS_", "GOOGLE_", "AZURE_"]
            .iter()
            .any(|p| name.starts_with(p))
    })
}

/// A URL as it may be shown and logged: without user and password
/// (`s3://key:secret@...`) or query (a signed URL's query is a credential).
pub fn redact_url(text: &str) -> String {
    match Url::parse(text) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.to_string()
        }
        Err(_) => "(an invalid URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(
            redact_url("s3://key:secret@bucket/fleet"),
            "s3://bucket/fleet"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:9000/b/x.tar?X-Amz-Signature=abc"),
            "http://127.0.0.1:9000/b/x.tar"
        );
        assert_eq!(redact_url("file:///var/backups"), "file:///var/backups");
        assert_eq!(redact_url("not a url"), "(an invalid URL)");
    }

    #[tokio::test]
    async fn keys_are_relative_to_the_prefix() {
        let store = Store::memory().scoped("host-a");
        store
            .put("packs/ab/abc", Bytes::from_static(b"x"))
            .await
            .unwrap();
        store.put("config", Bytes::from_static(b"y")).await.unwrap();
        let listed = store.list("packs").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, "packs/ab/abc");
        assert!(matches!(
            store.get("missing").await,
            Err(StoreError::NotFound { .. })
        ));
        store.delete("missing").await.unwrap();
    }

    #[test]
    fn bad_urls_are_named() {
        let err = Store::from_url("nonsense").unwrap_err();
        assert!(err.to_string().contains("nonsense"), "{err}");
    }
}
