//! Writer registration, so that prune never deletes data a running write relies on.
//!
//! In this process, writers hold the read side of a lock that prune takes for writing:
//! prune waits for running backups and backups wait for a running prune. A writer also
//! leaves a lock object `locks/<id>` (pid and start time) in the store, so another
//! process on the same host (the store prefix is per host) is seen too: prune never
//! deletes a pack younger than the oldest live writer. Lock objects of processes that
//! are gone are stale and removed by prune.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use super::error::RepoError;
use super::phases::PhaseTimer;
use crate::store::Store;

#[derive(Debug, Serialize, Deserialize)]
struct LockObject {
    pid: u32,
    started: DateTime<Utc>,
}

pub struct Writers {
    store: Store,
    gate: Arc<RwLock<()>>,
}

/// Held by a running write; dropping it releases the write's claim.
pub struct WriterLock {
    store: Store,
    key: String,
    _gate: OwnedRwLockReadGuard<()>,
}

/// Held by prune: no write runs in this process meanwhile.
pub struct ExclusiveLock {
    _gate: OwnedRwLockWriteGuard<()>,
}

impl Writers {
    pub fn new(store: Store) -> Self {
        Writers {
            store,
            gate: Arc::new(RwLock::new(())),
        }
    }

    pub async fn begin_write(&self) -> Result<WriterLock, RepoError> {
        let mut phases = PhaseTimer::start("backup.lock");
        let gate = self.gate.clone().read_owned().await;
        phases.lap("wait for prune");
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("the operating system's random source failed");
        let key = format!("locks/{}", hex::encode(random));
        let object = LockObject {
            pid: std::process::id(),
            started: Utc::now(),
        };
        let json = serde_json::to_vec(&object).expect("lock serializes");
        self.store.put(&key, Bytes::from(json)).await?;
        phases.lap("lock object");
        Ok(WriterLock {
            store: self.store.clone(),
            key,
            _gate: gate,
        })
    }

    /// Held while a backup is read (restore, export, verify): prune waits for it, so
    /// no pack is repacked or deleted under a reader. Readers of this process only.
    pub async fn begin_read(&self) -> OwnedRwLockReadGuard<()> {
        self.gate.clone().read_owned().await
    }

    pub async fn exclusive(&self) -> ExclusiveLock {
        ExclusiveLock {
            _gate: self.gate.clone().write_owned().await,
        }
    }

    /// The start of the oldest write still running in any process on this host;
    /// removes lock objects left by processes that no longer exist. Under the
    /// exclusive lock no write of this process runs, so its own lock objects are stale.
    pub async fn oldest_live_writer(
        &self,
        _held: &ExclusiveLock,
    ) -> Result<Option<DateTime<Utc>>, RepoError> {
        let mut oldest: Option<DateTime<Utc>> = None;
        for object in self.store.list("locks").await? {
            let parsed = match self.store.get(&object.key).await {
                Ok(raw) => serde_json::from_slice::<LockObject>(&raw).ok(),
                Err(crate::store::StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let started = match parsed {
                Some(lock) if lock.pid == std::process::id() || !process_exists(lock.pid) => {
                    self.store.delete(&object.key).await?;
                    continue;
                }
                Some(lock) => lock.started,
                // Unreadable: be safe and treat it as a live writer since it was written.
                None => object.last_modified,
            };
            oldest = Some(oldest.map_or(started, |o| o.min(started)));
        }
        Ok(oldest)
    }
}

impl WriterLock {
    /// Removes the lock object; the in-process claim ends when `self` drops.
    pub async fn release(self) {
        if let Err(e) = self.store.delete(&self.key).await {
            tracing::warn!(lock = %self.key, error = %e, "could not remove lock object; prune will remove it");
        }
    }
}

fn process_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        Err(_) => true,
    }
}
