//! Reading a bucket as it was written, underneath what came after: the recovery
//! view of a store with Object Lock.
//!
//! An intruder holding a host's credentials cannot remove a locked object version,
//! but can hide it: a plain DELETE puts a delete marker on top, a PUT a new version.
//! envsnap writes every key once (content-addressed packs, index objects and
//! manifests; the repository config at its creation), so the version it wrote is the
//! oldest one of its key, and whatever lies above it came later. [`PinnedVersions`]
//! is an `ObjectStore` that serves, for every key under a prefix, that oldest real
//! (non-marker) version, from one listing of all versions taken when it was built.
//! It is read-only. The engine checks every object against its id as it reads
//! (chunks against their hashes, manifests against their key), so a key whose oldest
//! version was not envsnap's is an error naming the object, never silent data.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::object_lock::ObjectVersion;

/// One key's pinned version.
#[derive(Debug, Clone)]
pub(super) struct Pin {
    pub version_id: String,
    /// Whether it is still the object's current version (nothing on top of it).
    pub is_latest: bool,
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

/// For each key, the oldest version that is not a delete marker (`versions` in
/// S3's listing order).
pub(super) fn oldest_versions(versions: Vec<ObjectVersion>) -> BTreeMap<String, Pin> {
    let mut pins: BTreeMap<String, Pin> = BTreeMap::new();
    for version in versions.into_iter().filter(|v| !v.delete_marker) {
        let pin = Pin {
            version_id: version.version_id,
            is_latest: version.is_latest,
            size: version.size,
            last_modified: version.last_modified,
        };
        // S3 lists a key's versions newest first, and times have whole seconds: on
        // a tie the one listed later is the older.
        match pins.get(&version.key) {
            Some(old) if old.last_modified < pin.last_modified => {}
            _ => {
                pins.insert(version.key, pin);
            }
        }
    }
    pins
}

/// A read-only store serving the pinned version of each key.
pub(super) struct PinnedVersions {
    inner: Arc<dyn ObjectStore>,
    pins: BTreeMap<String, Pin>,
}

impl PinnedVersions {
    pub fn new(inner: Arc<dyn ObjectStore>, pins: BTreeMap<String, Pin>) -> Self {
        PinnedVersions { inner, pins }
    }

    pub fn pin(&self, location: &ObjectPath) -> Option<&Pin> {
        self.pins.get(location.as_ref())
    }

    /// The keys whose pinned version is no longer the current one.
    pub fn covered(&self) -> impl Iterator<Item = (&str, &Pin)> {
        (self.pins.iter())
            .filter(|(_, pin)| !pin.is_latest)
            .map(|(key, pin)| (key.as_str(), pin))
    }

    fn metas(&self, prefix: Option<&ObjectPath>) -> Vec<ObjectMeta> {
        let start = (prefix.map(ObjectPath::as_ref))
            .filter(|p| !p.is_empty())
            .map(|p| format!("{p}/"))
            .unwrap_or_default();
        self.pins
            .range(start.clone()..)
            .take_while(|(key, _)| key.starts_with(&start))
            .map(|(key, pin)| ObjectMeta {
                location: ObjectPath::from(key.as_str()),
                last_modified: pin.last_modified,
                size: pin.size,
                e_tag: None,
                version: Some(pin.version_id.clone()),
            })
            .collect()
    }
}

fn read_only() -> object_store::Error {
    object_store::Error::NotSupported {
        source: "the recovery view of a store (original versions) is read-only".into(),
    }
}

impl fmt::Debug for PinnedVersions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PinnedVersions({}, {} keys)",
            self.inner,
            self.pins.len()
        )
    }
}

impl fmt::Display for PinnedVersions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "original versions of {}", self.inner)
    }
}

// `ObjectStore` is an `async_trait`; its methods written out by hand (the crate does
// not depend on `async-trait`).
impl ObjectStore for PinnedVersions {
    fn put_opts<'life0, 'life1, 'async_trait>(
        &'life0 self,
        _location: &'life1 ObjectPath,
        _payload: PutPayload,
        _opts: PutOptions,
    ) -> BoxFuture<'async_trait, object_store::Result<PutResult>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async { Err(read_only()) })
    }

    fn put_multipart_opts<'life0, 'life1, 'async_trait>(
        &'life0 self,
        _location: &'life1 ObjectPath,
        _opts: PutMultipartOptions,
    ) -> BoxFuture<'async_trait, object_store::Result<Box<dyn MultipartUpload>>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async { Err(read_only()) })
    }

    fn get_opts<'life0, 'life1, 'async_trait>(
        &'life0 self,
        location: &'life1 ObjectPath,
        mut options: GetOptions,
    ) -> BoxFuture<'async_trait, object_store::Result<GetResult>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let pin = self
                .pin(location)
                .ok_or_else(|| object_store::Error::NotFound {
                    path: location.to_string(),
                    source: "no version of this object in the store".into(),
                })?;
            options.version = Some(pin.version_id.clone());
            self.inner.get_opts(location, options).await
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        locations.map(|_| Err(read_only())).boxed()
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        futures::stream::iter(self.metas(prefix).into_iter().map(Ok)).boxed()
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
        Box::pin(async move {
            let depth = prefix.map_or(0, |p| p.parts().count());
            let mut result = ListResult {
                common_prefixes: Vec::new(),
                objects: Vec::new(),
                extensions: Default::default(),
            };
            for meta in self.metas(prefix) {
                let parts: Vec<_> = meta.location.parts().collect();
                if parts.len() == depth + 1 {
                    result.objects.push(meta);
                    continue;
                }
                let dir = ObjectPath::from_iter(parts.into_iter().take(depth + 1));
                if result.common_prefixes.last() != Some(&dir) {
                    result.common_prefixes.push(dir);
                }
            }
            Ok(result)
        })
    }

    fn copy_opts<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        _from: &'life1 ObjectPath,
        _to: &'life2 ObjectPath,
        _options: CopyOptions,
    ) -> BoxFuture<'async_trait, object_store::Result<()>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async { Err(read_only()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn version(key: &str, id: &str, minute: u32, marker: bool) -> ObjectVersion {
        ObjectVersion {
            key: key.into(),
            version_id: id.into(),
            is_latest: false,
            delete_marker: marker,
            size: 10,
            last_modified: Utc.with_ymd_and_hms(2026, 12, 1, 10, minute, 0).unwrap(),
        }
    }

    #[test]
    fn the_oldest_real_version_of_each_key_is_pinned() {
        let pins = oldest_versions(vec![
            version("h/packs/aa/1", "marker", 40, true),
            version("h/packs/aa/1", "attacker", 30, false),
            version("h/packs/aa/1", "original", 10, false),
            version("h/index/2", "gone", 20, true),
            version("h/index/3", "same-second attacker", 20, false),
            version("h/index/3", "same-second original", 20, false),
        ]);
        assert_eq!(pins.len(), 2);
        assert_eq!(pins["h/packs/aa/1"].version_id, "original");
        assert_eq!(pins["h/index/3"].version_id, "same-second original");
    }

    #[tokio::test]
    async fn listings_serve_the_pinned_keys_and_directories() {
        let pins = oldest_versions(vec![
            version("h/config", "c", 1, false),
            version("h/manifests/web/b1", "m1", 2, false),
            version("h/manifests/db/b2", "m2", 3, false),
            version("hx/config", "other", 4, false),
        ]);
        let store = PinnedVersions::new(Arc::new(object_store::memory::InMemory::new()), pins);
        let under_h: Vec<_> = store
            .list(Some(&ObjectPath::from("h/manifests")))
            .map(|m| m.unwrap().location.to_string())
            .collect()
            .await;
        assert_eq!(under_h, ["h/manifests/db/b2", "h/manifests/web/b1"]);
        let top = store
            .list_with_delimiter(Some(&ObjectPath::from("h")))
            .await
            .unwrap();
        let dirs: Vec<_> = top.common_prefixes.iter().map(|p| p.to_string()).collect();
        assert_eq!(dirs, ["h/manifests"]);
        assert_eq!(top.objects.len(), 1);
        let put = store
            .put_opts(
                &ObjectPath::from("h/x"),
                PutPayload::default(),
                Default::default(),
            )
            .await;
        assert!(put.unwrap_err().to_string().contains("read-only"));
    }
}
