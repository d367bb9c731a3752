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
//! A backup retention keeps past its expiry (count-based keeps, the newest) is
//! re-locked by each prune ([`Repository::keep_locked`]), after the sweep has
//! stopped lengthening what no backup needs.
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

/// Objects no backup needs that wait for their lock to pass (`prune --dry-run`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LockWait {
    pub objects: u64,
    /// When the first of their locks passes.
    pub next_unlock: Option<DateTime<Utc>>,
}

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

    /// Until when the shared data a backup expiring at `expires` writes is locked
    /// (`None` without a lock policy). Computed once per write, so that the date
    /// recorded is the date sent.
    pub(super) fn shared_retention(&self, expires: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        let policy = self.lock_policy()?;
        Some(self.shared_lock(&policy, expires))
    }

    /// Until when a backup's own objects are locked, and whether they get a legal
    /// hold (kept forever).
    pub(super) fn backup_retention(&self, manifest: &Manifest) -> Option<(DateTime<Utc>, bool)> {
        let policy = self.lock_policy()?;
        let expires = manifest.meta.expires;
        Some((self.backup_lock(&policy, expires), expires.is_none()))
    }

    /// The store that writes with `retention` (until when, and whether held): the
    /// store itself without one.
    pub(super) fn store_retaining(&self, retention: Option<(DateTime<Utc>, bool)>) -> Store {
        match retention {
            Some((until, hold)) => self.store().retaining(until, hold),
            None => self.store().clone(),
        }
    }

    /// Until when prune locks a merged index object: as long as the longest lock of
    /// the shared data it names (`None` without a lock policy).
    pub(super) async fn consolidated_index_lock(&self) -> Result<Option<DateTime<Utc>>, RepoError> {
        let Some(policy) = self.lock_policy() else {
            return Ok(None);
        };
        let latest = self.catalog().blocking(|c| c.latest_shared_lock()).await?;
        Ok(Some(
            latest.unwrap_or_else(|| self.shared_lock(&policy, None)),
        ))
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
            .blocking(move |c| c.locks_due(needed))
            .await?;
        let store = self.store();
        // An object gone from the store (deleted by a prune a crash interrupted
        // before it forgot it) is forgotten here.
        let outcomes: Vec<(String, bool)> = futures::stream::iter(due)
            .map(|key| async move {
                match store.extend_lock(&key, target).await {
                    Ok(()) => Ok((key, true)),
                    Err(crate::store::StoreError::NotFound { .. }) => Ok((key, false)),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(store.concurrency())
            .try_collect()
            .await?;
        let (kept, gone): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(|(_, kept)| *kept);
        let kept: Vec<String> = kept.into_iter().map(|(key, _)| key).collect();
        let gone: Vec<String> = gone.into_iter().map(|(key, _)| key).collect();
        let count = kept.len() as u64;
        self.catalog()
            .blocking(move |c| {
                c.record_locks(kept.iter().map(String::as_str), target, true)?;
                c.forget_locks(&gone)
            })
            .await?;
        Ok(count)
    }

    /// Records that shared objects a write made are locked until `until` (before
    /// the manifest: a crash must not leave them unknown).
    pub(super) async fn record_shared_locks(
        &self,
        keys: Vec<String>,
        until: Option<DateTime<Utc>>,
    ) -> Result<(), RepoError> {
        let Some(until) = until else {
            return Ok(());
        };
        self.catalog()
            .blocking(move |c| c.record_locks(keys.iter().map(String::as_str), until, true))
            .await?;
        Ok(())
    }

    /// Records the lock of a backup's manifest, once written with `retention`.
    pub(super) async fn record_backup_lock(
        &self,
        manifest: &Manifest,
        retention: Option<(DateTime<Utc>, bool)>,
    ) -> Result<(), RepoError> {
        let Some((until, _)) = retention else {
            return Ok(());
        };
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
        // Locked until the date first, then the hold lifted: never neither.
        let until = self.backup_lock(&policy, Some(expires));
        self.store().extend_lock(&key, until).await?;
        self.store().set_legal_hold(&key, false).await?;
        let recorded = key.clone();
        self.catalog()
            .blocking(move |c| c.record_locks([recorded.as_str()], until, false))
            .await?;
        self.lengthen_shared_locks(Some(expires)).await?;
        Ok(())
    }

    /// A backup retention keeps past its expiry (count-based keeps, the newest of
    /// its environment, one in use) stays locked while kept: when its manifest's
    /// lock would pass within `extra`, it is lengthened to now + `extra` + 7 days,
    /// and the shared data with it. Prune calls this daily, so a kept backup never
    /// lies unlocked.
    pub async fn keep_locked(&self, env: &str, backup_id: &str) -> Result<(), RepoError> {
        let Some(policy) = self.lock_policy() else {
            return Ok(());
        };
        let key = manifest_key(checked_name(env)?, checked_name(backup_id)?);
        let now = Utc::now();
        let needed = now + extra(&policy);
        let dates = self.lock_dates(vec![key.clone()]).await?;
        if dates.get(&key).is_some_and(|until| *until >= needed) {
            return Ok(());
        }
        let until = needed + RENEW_AHEAD;
        self.store().extend_lock(&key, until).await?;
        self.catalog()
            .blocking(move |c| c.record_locks([key.as_str()], until, false))
            .await?;
        self.lengthen_shared_locks(Some(now + RENEW_AHEAD)).await?;
        Ok(())
    }

    /// On the first start with a lock policy, the data already in the store is
    /// recorded as shared with an unknown lock, so the next backup locks what it
    /// reuses (two listings, once).
    pub async fn adopt_unlocked_data(&self) -> Result<(), RepoError> {
        if self.lock_policy().is_none() {
            return Ok(());
        }
        if self
            .catalog()
            .blocking(|c| c.latest_shared_lock())
            .await?
            .is_some()
        {
            return Ok(());
        }
        let mut keys = vec![CONFIG_KEY.to_owned()];
        for dir in ["packs", "index"] {
            keys.extend(self.store().list(dir).await?.into_iter().map(|o| o.key));
        }
        self.catalog()
            .blocking(move |c| c.record_unknown_locks(keys.iter().map(String::as_str)))
            .await?;
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
        // The catalog first: a crash before the deletes leaves objects it no longer
        // knows (asked of the store when met again), never dates of deleted ones.
        let forgotten = free.clone();
        self.catalog()
            .blocking(move |c| {
                c.unshare_locks(&locked)?;
                c.forget_locks(&forgotten)
            })
            .await?;
        Ok(Deletable {
            now: free,
            waiting,
            next_unlock,
        })
    }

    /// Index objects a merge replaced that wait for their lock to pass: prune no
    /// longer reads them, and deletes them once it has passed.
    pub(super) async fn replaced_index_objects(&self) -> Result<HashSet<String>, RepoError> {
        if self.lock_policy().is_none() {
            return Ok(HashSet::new());
        }
        let keys = self
            .catalog()
            .blocking(|c| c.unneeded_locks("index"))
            .await?;
        Ok(keys.into_iter().collect())
    }

    /// The packs and index objects no backup needs whose lock has not passed, as
    /// far as the catalog knows (`None` without a lock policy).
    pub async fn waiting_for_lock(&self) -> Result<Option<LockWait>, RepoError> {
        if self.lock_policy().is_none() {
            return Ok(None);
        }
        let now = Utc::now();
        let dates = self
            .catalog()
            .blocking(|c| {
                let mut keys = c.unneeded_locks("packs")?;
                keys.extend(c.unneeded_locks("index")?);
                c.lock_dates(&keys)
            })
            .await?;
        let waiting: Vec<DateTime<Utc>> = dates.into_values().filter(|u| *u > now).collect();
        Ok(Some(LockWait {
            objects: waiting.len() as u64,
            next_unlock: waiting.into_iter().min(),
        }))
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
        // Recorded as unknown after a rebuild: the store knows.
        dates.retain(|_, until| *until > DateTime::<Utc>::UNIX_EPOCH);
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
