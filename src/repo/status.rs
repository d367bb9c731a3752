//! The store seen as a fleet: each host's status object, its manifests' keys, and the
//! marks of retired hosts, read without opening any host's repository.
//!
//! `<host>/status` is a host's heartbeat: sealed JSON (like a manifest) that the
//! daemon writes again and again, the one object under a host's prefix that is ever
//! replaced. A put is atomic on every store (object stores replace whole objects; a
//! local store renames a finished file into place), so a reader sees the old status
//! or the new one, never half. What the JSON says is the fleet's business
//! (`fleet/status.rs`); the engine only stores it.
//!
//! `_fleet/retired/<host>` marks a host an operator retired (`fleet forget`). It lies
//! outside every host's prefix (no host name starts with `_`), so any host may write
//! it, and writing it twice is harmless.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::crypto::Keys;
use super::manifest::is_safe_name;
use super::{RepoError, Repository, checked_name};
use crate::store::{Store, StoreError};

/// Where a host keeps its status, below its prefix.
const STATUS_KEY: &str = "status";
/// A status is a few KiB; anything far larger is not one.
const MAX_STATUS: u64 = 4 << 20;
/// Where retired hosts are marked, at the top of the store.
const RETIRED_DIR: &str = "_fleet/retired";

/// One manifest as a listing shows it: no read, no key needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    pub env: String,
    /// The backup's id (its manifest's name).
    pub id: String,
    /// When the store received it: the backup's completion.
    pub written: DateTime<Utc>,
}

impl Repository {
    /// Replaces this host's status object with `json`, sealed.
    pub async fn put_status(&self, json: Vec<u8>) -> Result<(), RepoError> {
        let sealed = self.keys().seal(json);
        self.store().put(STATUS_KEY, Bytes::from(sealed)).await?;
        Ok(())
    }
}

/// The hosts with a prefix in the store, by name.
pub async fn list_hosts(root: &Store) -> Result<Vec<String>, RepoError> {
    let mut hosts: Vec<String> = root
        .list_dirs("")
        .await?
        .into_iter()
        .filter(|name| is_safe_name(name))
        .collect();
    hosts.sort();
    Ok(hosts)
}

/// `host`'s status, opened with `keys`; `None` when it never wrote one. One request.
pub async fn read_status(
    root: &Store,
    host: &str,
    keys: &Keys,
) -> Result<Option<Vec<u8>>, RepoError> {
    let store = root.scoped(checked_name(host)?);
    let sealed = match store.get_capped(STATUS_KEY, MAX_STATUS).await {
        Ok(Some(sealed)) => sealed,
        Ok(None) => return Err(corrupt("too large for a status")),
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let plain = keys
        .open(&sealed)
        .map_err(|_| corrupt("cannot be opened with this key"))?;
    Ok(Some(plain))
}

/// `host`'s manifests, by key only (a listing: no manifest is read).
pub async fn list_manifests(root: &Store, host: &str) -> Result<Vec<ManifestEntry>, RepoError> {
    let store = root.scoped(checked_name(host)?);
    Ok(store
        .list("manifests")
        .await?
        .into_iter()
        .filter_map(|object| {
            let mut parts = object.key.split('/');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some("manifests"), Some(env), Some(id), None)
                    if is_safe_name(env) && is_safe_name(id) =>
                {
                    Some(ManifestEntry {
                        env: env.to_owned(),
                        id: id.to_owned(),
                        written: object.last_modified,
                    })
                }
                _ => None,
            }
        })
        .collect())
}

fn corrupt(reason: &str) -> RepoError {
    RepoError::Corrupt {
        object: STATUS_KEY.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Marks `host` retired (`json` says by whom and when).
pub async fn retire_host(root: &Store, host: &str, json: Vec<u8>) -> Result<(), RepoError> {
    let key = format!("{RETIRED_DIR}/{}", checked_name(host)?);
    root.put(&key, Bytes::from(json)).await?;
    Ok(())
}

/// The retired hosts and when each was marked.
pub async fn retired_hosts(root: &Store) -> Result<Vec<(String, DateTime<Utc>)>, RepoError> {
    Ok(root
        .list(RETIRED_DIR)
        .await?
        .into_iter()
        .filter_map(|object| {
            let host = object.key.rsplit('/').next()?.to_owned();
            is_safe_name(&host).then_some((host, object.last_modified))
        })
        .collect())
}

/// Deletes everything under `host`'s prefix: its backups, packs and status. Returns
/// the number of objects deleted. The repository config goes last, so an
/// interrupted deletion still reads as a (damaged) repository, not as nothing.
pub async fn delete_host(root: &Store, host: &str) -> Result<u64, RepoError> {
    let store = root.scoped(checked_name(host)?);
    let mut objects = store.list("").await?;
    objects.sort_by_key(|o| o.key == "config");
    let mut deleted = 0;
    for object in objects {
        store.delete(&object.key).await?;
        deleted += 1;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_status_being_replaced_is_never_read_torn() {
        let dir = tempfile::tempdir().unwrap();
        let root = Store::from_url(&format!("file://{}", dir.path().display())).unwrap();
        let keys = Keys::from_secret(&[7u8; 32]);
        let catalog = crate::catalog::Catalog::in_memory().unwrap();
        Repository::init(&root, "web-01", &keys, Default::default())
            .await
            .unwrap();
        let repo = Repository::open(&root, "web-01", keys.clone(), catalog)
            .await
            .unwrap();
        let writer = tokio::spawn(async move {
            for round in 0..200u32 {
                let json = format!("{{\"round\":{round},\"pad\":\"{}\"}}", "x".repeat(20_000));
                repo.put_status(json.into_bytes()).await.unwrap();
            }
        });
        let mut seen = 0;
        while !writer.is_finished() {
            if let Some(json) = read_status(&root, "web-01", &keys).await.unwrap() {
                let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
                assert!(value["round"].is_u64());
                seen += 1;
            }
        }
        writer.await.unwrap();
        assert!(seen > 0);
        assert_eq!(list_hosts(&root).await.unwrap(), ["web-01"]);
    }
}
