//! Object Lock in the engine (`store.lock`): which date each object is locked to.
//!
//! Every object a backup needs stays locked at least as long as the backup: until
//! its expiry plus the policy's `extra`. A backup's own objects (its manifest, its
//! drill reports) are locked to exactly that date; a backup kept forever gets a
//! legal hold on its manifest instead. Shared data (packs, index objects, the
//! repository config) is needed by every backup that reuses it, so:
//!
//! - new shared objects are written locked until the backup's expiry + `extra` + a
//!   margin: half the backup's lifetime, at most [`RENEW_AHEAD`] (7 days);
//! - at commit, before the manifest (the commit point) is written, every shared
//!   object the catalog knows whose lock ends before the new backup's expiry +
//!   `extra` is lengthened to that date + the margin. Lengthening every shared
//!   object rather than only those the backup references needs no walk of its tree,
//!   and the margin bounds the requests: with daily backups kept 14 days, each
//!   object is lengthened about once a week, whatever the number of backups. The
//!   price: data no backup needs any more stays locked up to that margin longer.
//!   A crash before the manifest leaves longer locks, never a backup whose data
//!   could be deleted before it expires.
//!
//! Prune deletes only objects whose lock has passed; the rest stop being lengthened
//! and wait (`PruneReport::waiting_for_lock`). Dates come from the catalog
//! (`catalog/locks.rs`), which may only underestimate them; an object it does not
//! know is asked of the store.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use futures::{StreamExt, TryStreamExt};

use super::id::Id;
use super::manifest::{Manifest, manifest_key};
use super::{CONFIG_KEY, RepoError, Repository, checked_name};
use crate::store::{LockPolicy, Store};

/// At most how far beyond what a backup needs shared data is locked, so that daily
/// backups lengthen each object about once a week instead of every day.
pub const RENEW_AHEAD: chrono::Duration = chrono::Duration::days(7);

/// Objects prune may delete now, and those waiting for their lock to pass.
#[derive(Debug, Default)]
pub(super) struct Deletable {
    pub now: Vec<String>,
    pub waiting: u64,
    /// When the first waiting object's lock passes.
    pub next_unlock: Option<DateTime<Utc>>,
}

impl Repository {
    /// The lock policy of the store, if it locks what it writes.
    pub fn lock_policy(&self) -> Option<LockPolicy> {
        self.store().lock_policy()
    }

    /// How long a backup expiring at `expires` must stay locked (its own objects).
    pub(super) fn backup_lock(
        &self,
        policy: &LockPolicy,
        expires: Option<DateTime<Utc>>,
    ) -> DateTime<Utc> {
        expires.unwrap_or_else(Utc::now) + extra(policy)
    }

    /// How long shared data a backup expiring at `expires` needs is locked: its own
    /// lock, plus half its lifetime (at most [`RENEW_AHEAD`]) to spare requests.
    fn shared_lock(&self, policy: &LockPolicy, expires: Option<DateTime<Utc>>) -> DateTime<Utc> {
        let now = Utc::now();
        let lifetime = expires.map_or(RENEW_AHEAD * 2, |e| (e - now).max(chrono::Duration::zero()));
        self.backup_lock(policy, expires) + (lifetime / 2).min(RENEW_AHEAD)
    }

    /// The store a backup expiring at `expires` writes its shared data with.
    pub(super) fn shared_data_store(&self, expires: Option<DateTime<Utc>>) -> Store {
        match self.lock_policy() {
            Some(policy) => {
                let until = self.shared_lock(&policy, expires);
                self.store().retaining(until, false)
            }
            None => self.store().clone(),
        }
    }

    /// The store a backup's own objects (manifest, drill reports) are written with.
    pub(super) fn backup_store(&self, manifest: &Manifest) -> Store {
        match self.lock_policy() {
            Some(policy) => {
                let hold = manifest.meta.expires.is_none();
                let until = self.backup_lock(&policy, manifest.meta.expires);
                self.store().retaining(until, hold)
            }
            None => self.store().clone(),
        }
    }

    /// The store prune writes a merged index object with, and its lock: as long as
    /// the longest lock of the shared data it names.
    pub(super) async fn consolidated_index_store(
        &self,
    ) -> Result<(Store, Option<DateTime<Utc>>), RepoError> {
        let Some(policy) = self.lock_policy() else {
            return Ok((self.store().clone(), None));
        };
        let latest = self.catalog().blocking(|c| c.latest_shared_lock()).await?;
        let until = latest.unwrap_or_else(|| self.shared_lock(&policy, None));
        Ok((self.store().retaining(until, false), Some(until)))
    }

    /// Lengthens every shared object locked for less than a backup expiring at
    /// `expires` needs (see the module doc); records the new dates.
    pub(super) async fn lengthen_shared_locks(
        &self,
        expires: Option<DateTime<Utc>>,
    ) -> Result<u64, RepoError> {
        let Some(policy) = self.lock_policy() else {
            return Ok(0);
        };
        let needed = self.backup_lock(&policy, expires);
        let target = self.shared_lock(&policy, expires);
        let due = self
            .catalog()
            .blocking(move |c| {
                c.record_unknown_locks([CONFIG_KEY])?;
                c.locks_due(needed)
            })
            .await?;
        let store = self.store();
        futures::stream::iter(due.clone())
            .map(|key| async move { store.extend_lock(&key, target).await })
            .buffer_unordered(store.concurrency())
            .try_collect::<()>()
            .await?;
        let count = due.len() as u64;
        self.catalog()
            .blocking(move |c| c.record_locks(due.iter().map(String::as_str), target, true))
            .await?;
        Ok(count)
    }

    /// Records the locks of shared objects a write of a backup expiring at
    /// `expires` made (before its manifest: a crash must not leave them unknown).
    pub(super) async fn record_shared_locks(
        &self,
        keys: Vec<String>,
        expires: Option<DateTime<Utc>>,
    ) -> Result<(), RepoError> {
        let Some(policy) = self.lock_policy() else {
            return Ok(());
        };
        let until = self.shared_lock(&policy, expires);
        self.catalog()
            .blocking(move |c| c.record_locks(keys.iter().map(String::as_str), until, true))
            .await?;
        Ok(())
    }

    /// Records the lock of a backup's manifest, once written.
    pub(super) async fn record_backup_lock(&self, manifest: &Manifest) -> Result<(), RepoError> {
        let Some(policy) = self.lock_policy() else {
            return Ok(());
        };
        let until = self.backup_lock(&policy, manifest.meta.expires);
        let key = manifest.key();
        self.catalog()
            .blocking(move |c| c.record_locks([key.as_str()], until, false))
            .await?;
        Ok(())
    }

    /// A backup's expiry changed (`backup keep`): kept forever, its manifest gets a
    /// legal hold; kept until a date, the hold goes and its manifest and the shared
    /// data stay locked until that date + `extra` (a lock is never shortened).
    pub async fn relock_backup(
        &self,
        manifest: &Manifest,
        expires: Option<DateTime<Utc>>,
    ) -> Result<(), RepoError> {
        let Some(policy) = self.lock_policy() else {
            return Ok(());
        };
        let key = manifest.key();
        let Some(expires) = expires else {
            self.store().set_legal_hold(&key, true).await?;
            return Ok(());
        };
        self.store().set_legal_hold(&key, false).await?;
        let until = self.backup_lock(&policy, Some(expires));
        self.store().extend_lock(&key, until).await?;
        let recorded = key.clone();
        self.catalog()
            .blocking(move |c| c.record_locks([recorded.as_str()], until, false))
            .await?;
        self.lengthen_shared_locks(Some(expires)).await?;
        Ok(())
    }

    /// Until when a backup's manifest is locked (`None`: not locked, or no lock
    /// policy): a backup cannot be deleted before.
    pub async fn manifest_locked_until(
        &self,
        env: &str,
        backup_id: &str,
    ) -> Result<Option<DateTime<Utc>>, RepoError> {
        if self.lock_policy().is_none() {
            return Ok(None);
        }
        let key = manifest_key(checked_name(env)?, checked_name(backup_id)?);
        let dates = self.lock_dates(vec![key]).await?;
        let until = dates
            .into_values()
            .next()
            .filter(|until| *until > Utc::now());
        // Shown in whole seconds: rounded up, so that the date said is never early.
        Ok(until.map(|t| t.trunc_subsecs(0) + chrono::Duration::seconds(1)))
    }

    /// Splits `keys` into those whose lock has passed and the rest, which stop being
    /// lengthened. Without a lock policy, all may go.
    pub(super) async fn deletable_now(&self, keys: Vec<String>) -> Result<Deletable, RepoError> {
        if self.lock_policy().is_none() || keys.is_empty() {
            return Ok(Deletable {
                now: keys,
                ..Default::default()
            });
        }
        let dates = self.lock_dates(keys.clone()).await?;
        let now = Utc::now();
        let (locked, free): (Vec<String>, Vec<String>) = keys
            .into_iter()
            .partition(|k| dates.get(k).is_some_and(|until| *until > now));
        let next_unlock = locked.iter().filter_map(|k| dates.get(k)).min().copied();
        let waiting = locked.len() as u64;
        self.catalog()
            .blocking(move |c| c.unshare_locks(&locked))
            .await?;
        Ok(Deletable {
            now: free,
            waiting,
            next_unlock,
        })
    }

    /// After `keys` were deleted: the catalog forgets their locks.
    pub(super) async fn forget_locks(&self, keys: Vec<String>) -> Result<(), RepoError> {
        if self.lock_policy().is_some() {
            self.catalog()
                .blocking(move |c| c.forget_locks(&keys))
                .await?;
        }
        Ok(())
    }

    /// Lock dates of `keys`: the catalog's, else the store's (then recorded).
    async fn lock_dates(
        &self,
        keys: Vec<String>,
    ) -> Result<HashMap<String, DateTime<Utc>>, RepoError> {
        let asked = keys.clone();
        let mut dates = self
            .catalog()
            .blocking(move |c| c.lock_dates(&asked))
            .await?;
        let unknown: Vec<String> = keys
            .into_iter()
            .filter(|k| !dates.contains_key(k))
            .collect();
        let store = self.store();
        let read: Vec<(String, Option<DateTime<Utc>>)> = futures::stream::iter(unknown)
            .map(|key| async move {
                let until = store.lock_of(&key).await?;
                Ok::<_, RepoError>((key, until))
            })
            .buffer_unordered(store.concurrency())
            .try_collect()
            .await?;
        for (key, until) in read {
            if let Some(until) = until {
                let recorded = key.clone();
                self.catalog()
                    .blocking(move |c| c.record_locks([recorded.as_str()], until, false))
                    .await?;
                dates.insert(key, until);
            }
        }
        Ok(dates)
    }

    /// After a catalog rebuild: what the index names is needed again (lengthened by
    /// the next backup, from the store's date when unknown), and only a mark may
    /// tell otherwise, so the next prune marks.
    pub(super) async fn forget_lock_dates(&self, keys: Vec<String>) -> Result<(), RepoError> {
        if self.lock_policy().is_some() {
            self.catalog()
                .blocking(move |c| {
                    c.reshare_locks(keys.iter().map(String::as_str))?;
                    c.owe_sweep()
                })
                .await?;
        }
        Ok(())
    }

    /// Packs a prune found unneeded that still wait for their lock: stale index
    /// objects (kept while locked) may still name them, but no backup needs them.
    pub(super) async fn unneeded_packs(&self) -> Result<HashSet<Id>, RepoError> {
        if self.lock_policy().is_none() {
            return Ok(HashSet::new());
        }
        let keys = self
            .catalog()
            .blocking(|c| c.unneeded_locks("packs"))
            .await?;
        Ok(keys
            .iter()
            .filter_map(|k| Id::from_hex(k.rsplit('/').next()?))
            .collect())
    }
}

fn extra(policy: &LockPolicy) -> chrono::Duration {
    chrono::Duration::from_std(policy.extra).unwrap_or(chrono::Duration::days(36_500))
}
