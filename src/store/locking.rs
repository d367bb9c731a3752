//! Object Lock on the store: what `[store] lock` changes in [`Store`]'s operations.
//!
//! With a lock policy, a store clone made by [`Store::retaining`] writes every object
//! with a retention date (S3 Object Lock, governance or compliance mode) and
//! optionally a legal hold; the engine decides the dates (`repo/immutable.rs`), this
//! layer only sends them. Locks are lengthened with [`Store::extend_lock`] and read
//! back with [`Store::lock_of`]. [`Store::check_lock`] makes sure, at start-up, that
//! the bucket really has Object Lock enabled, so that a misconfigured bucket is
//! refused instead of silently leaving backups deletable. [`Store::original_versions`]
//! is the recovery view (`versions.rs`): the objects as envsnap wrote them,
//! underneath whatever an intruder put or deleted on top.
//!
//! The S3 requests themselves (object_store has no Object Lock) are in
//! `object_lock.rs`.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;

use super::object_lock::{Retention, S3Lock};
use super::policy::{LockPolicy, Locking, Retain};
use super::versions::{PinnedVersions, oldest_versions};
use super::{Store, StoreError};

impl Store {
    /// The same store, locking what it writes by `policy`. Only S3 has Object Lock.
    pub fn with_lock(self, url: &str, policy: LockPolicy) -> Result<Store, StoreError> {
        let bad = |reason: String| StoreError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "s3" | "s3a") {
            return Err(bad(
                "store.lock needs an S3 store (s3://BUCKET/PREFIX): only S3 has Object Lock".into(),
            ));
        }
        let api = S3Lock::from_url(&parsed)?;
        Ok(Store {
            lock: Some(Arc::new(Locking { api, policy })),
            ..self
        })
    }

    /// The lock policy in force, if the store locks what it writes.
    pub fn lock_policy(&self) -> Option<LockPolicy> {
        self.lock.as_ref().map(|l| l.policy)
    }

    /// Refuses a bucket without Object Lock when a lock policy is set: its "locked"
    /// backups would be deletable by anyone holding the credentials.
    pub async fn check_lock(&self) -> Result<(), StoreError> {
        let Some(lock) = &self.lock else {
            return Ok(());
        };
        let enabled = self.retried(|| lock.api.bucket_lock_enabled()).await?;
        if enabled {
            return Ok(());
        }
        Err(StoreError::Permanent {
            key: "the bucket".into(),
            reason: "store.lock is set but the bucket does not have Object Lock enabled \
                     (create the bucket with Object Lock, or remove store.lock)"
                .into(),
        })
    }

    /// A clone whose puts lock each object until `until` (and put a legal hold on it
    /// with `hold`). Without a lock policy, the same store.
    pub fn retaining(&self, until: DateTime<Utc>, hold: bool) -> Store {
        Store {
            retain: Some(Retain { until, hold }),
            ..self.clone()
        }
    }

    /// Puts through the lock when this clone carries a retention.
    pub(super) async fn put_locked(
        &self,
        key: &str,
        path: &ObjectPath,
        data: &Bytes,
    ) -> Option<Result<(), StoreError>> {
        let (lock, retain) = (self.lock.as_ref()?, self.retain?);
        let retention = Retention {
            mode: lock.policy.mode,
            until: retain.until,
        };
        let result = self
            .retried(|| async {
                (lock.api)
                    .put_locked(path, data.clone(), &retention, retain.hold)
                    .await
                    .map(|_version| ())
                    .map_err(|e| e.for_key(key))
            })
            .await;
        Some(result)
    }

    /// Lengthens the lock of `key` to `until` (never shortens it).
    pub async fn extend_lock(&self, key: &str, until: DateTime<Utc>) -> Result<(), StoreError> {
        let lock = self.locking(key)?;
        let retention = Retention {
            mode: lock.policy.mode,
            until,
        };
        let path = self.path(key);
        self.retried(|| async {
            (lock.api)
                .extend_retention(&path, &retention)
                .await
                .map_err(|e| e.for_key(key))
        })
        .await
    }

    /// Until when `key` (its pinned version in the recovery view) is locked, if it is.
    pub async fn lock_of(&self, key: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let lock = self.locking(key)?;
        let path = self.path(key);
        let version = self
            .pinned
            .as_ref()
            .and_then(|p| p.pin(&path))
            .map(|p| p.version_id.clone());
        let retention = self
            .retried(|| async {
                (lock.api)
                    .retention(&path, version.as_deref())
                    .await
                    .map_err(|e| e.for_key(key))
            })
            .await?;
        Ok(retention.map(|r| r.until))
    }

    /// Puts or lifts the legal hold on `key`.
    pub async fn set_legal_hold(&self, key: &str, on: bool) -> Result<(), StoreError> {
        let lock = self.locking(key)?;
        let path = self.path(key);
        self.retried(|| async {
            (lock.api)
                .set_legal_hold(&path, on)
                .await
                .map_err(|e| e.for_key(key))
        })
        .await
    }

    fn locking(&self, key: &str) -> Result<&Locking, StoreError> {
        self.lock.as_deref().ok_or_else(|| StoreError::Permanent {
            key: key.to_owned(),
            reason: "this store has no lock policy (store.lock)".into(),
        })
    }

    /// The recovery view of everything under `dir`: for each key, the version
    /// envsnap wrote (the oldest real one), whatever was written or deleted on top.
    /// Under `locked_dirs` (relative to `dir`), a key counts only while its lock
    /// lasts: a backup pruned after its lock expired does not come back.
    pub async fn original_versions(
        &self,
        dir: &str,
        locked_dirs: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Store, StoreError> {
        let pinned = Arc::new(self.pinned_versions(dir, locked_dirs, now).await?);
        Ok(Store {
            inner: pinned.clone(),
            pinned: Some(pinned),
            retain: None,
            ..self.clone()
        })
    }

    /// Puts the version envsnap wrote back on top of every key under `dir` that was
    /// overwritten or hidden under a delete marker since, as long as that version is
    /// still locked (objects envsnap itself deleted after their lock passed, and
    /// unlocked ones such as the status, stay as they are). Locked again until the
    /// same date. Returns how many objects were restored.
    pub async fn restore_original_versions(
        &self,
        dir: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let lock = self.locking(dir)?;
        let pinned = self.pinned_versions(dir, &[], now).await?;
        let covered: Vec<(String, String)> = pinned
            .covered()
            .map(|(key, pin)| (key.to_owned(), pin.version_id.clone()))
            .collect();
        // The repository config last: a restore interrupted midway leaves it
        // missing, so the next start resumes (it restores when the config is gone).
        let config = format!("{}/config", self.path(dir));
        let (config, others): (Vec<_>, Vec<_>) =
            covered.into_iter().partition(|(key, _)| *key == config);
        let mut restored = 0;
        for batch in [others, config] {
            let done: Vec<bool> = futures::stream::iter(batch)
                .map(|(key, version)| self.restore_original(lock, key, version, now))
                .buffer_unordered(self.packs_in_flight(16 << 20))
                .try_collect()
                .await?;
            restored += done.into_iter().filter(|r| *r).count() as u64;
        }
        Ok(restored)
    }

    /// Puts one key's original version back on top, if it is still locked (or
    /// held): with the same date and hold.
    async fn restore_original(
        &self,
        lock: &Locking,
        key: String,
        version: String,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let path = ObjectPath::from(key.as_str());
        let state = self
            .retried(|| lock.api.lock_state(&path, Some(&version)))
            .await?;
        let until = state
            .retention
            .map(|r| r.until)
            .filter(|until| *until > now);
        if until.is_none() && !state.legal_hold {
            return Ok(false);
        }
        let data = self.get_version(&key, &path, &version).await?;
        let relative = self.relative_key(&path);
        // A held object whose date passed gets the policy's shortest: now + extra.
        let extra = chrono::Duration::from_std(lock.policy.extra).unwrap_or_default();
        let until = until.unwrap_or(now + extra);
        (self.retaining(until, state.legal_hold))
            .put(&relative, data)
            .await?;
        tracing::warn!(object = %key, "restored the locked original of an object written over or deleted");
        Ok(true)
    }

    async fn get_version(
        &self,
        key: &str,
        path: &ObjectPath,
        version: &str,
    ) -> Result<Bytes, StoreError> {
        self.retried(|| async {
            let options = object_store::GetOptions {
                version: Some(version.to_owned()),
                ..Default::default()
            };
            let got = self.inner.get_opts(path, options).await;
            let got = got.map_err(|e| StoreError::classify(key, e))?;
            got.bytes().await.map_err(|e| StoreError::classify(key, e))
        })
        .await
    }

    async fn pinned_versions(
        &self,
        dir: &str,
        locked_dirs: &[&str],
        now: DateTime<Utc>,
    ) -> Result<PinnedVersions, StoreError> {
        let lock = self.locking(dir)?;
        let prefix = self.path(dir);
        let versions = self
            .retried(|| async { lock.api.list_versions(&prefix).await })
            .await?;
        // Only keys under the prefix asked for, whatever the listing says.
        let inside = format!("{prefix}/");
        let versions = versions.into_iter().filter(|v| v.key.starts_with(&inside));
        let mut pins = oldest_versions(versions.collect());
        let locked: Vec<String> = locked_dirs
            .iter()
            .map(|d| format!("{prefix}/{d}/"))
            .collect();
        let checked: Vec<(String, String)> = pins
            .iter()
            .filter(|(k, _)| locked.iter().any(|l| k.starts_with(l.as_str())))
            .map(|(k, pin)| (k.clone(), pin.version_id.clone()))
            .collect();
        let expired: Vec<String> = futures::stream::iter(checked)
            .map(|(key, version)| async move {
                let path = ObjectPath::from(key.as_str());
                let state = self
                    .retried(|| lock.api.lock_state(&path, Some(&version)))
                    .await?;
                let locked = state.legal_hold || state.retention.is_some_and(|r| r.until > now);
                Ok::<_, StoreError>((!locked).then_some(key))
            })
            .buffer_unordered(self.concurrency())
            .try_filter_map(|k| async move { Ok(k) })
            .try_collect()
            .await?;
        for key in expired {
            pins.remove(&key);
        }
        Ok(PinnedVersions::new(self.inner.clone(), pins))
    }
}
