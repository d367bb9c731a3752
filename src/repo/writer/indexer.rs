//! Indexing what a write uploads: an index object naming its packs and their
//! chunks, their lock dates (Object Lock), then the catalog's chunk index, which is
//! what later writes deduplicate against (only once all of that is durable).
//!
//! A write indexes at its commit, and also every [`FLUSH_CHUNKS`] new chunks while it
//! runs: otherwise a first backup of a million files holds every new chunk's place,
//! and its own dedup set, until the end (envsnapd's memory grew with the file count:
//! 96 MiB at 250,000 files, 205 MiB at 1,000,000). Packs indexed before the commit
//! are relied on by later writes at once, so a write that fails afterwards must not
//! delete them: the catalog owes a sweep from the first such flush on, and the next
//! prune's mark reclaims them if no backup refers to them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::repo::id::Id;
use crate::repo::index::IndexObject;
use crate::repo::pack::PackEntry;
use crate::repo::{RepoError, Repository, pack_key};
use crate::store::Store;

/// The packs a write uploaded, with the chunks each holds.
pub(super) type UploadedPacks = Vec<(Id, Vec<PackEntry>)>;

/// New chunks indexed at a time while a write runs.
pub(super) const FLUSH_CHUNKS: usize = 65_536;

/// What the packer and the commit share to index a write's packs.
pub(super) struct Indexer {
    pub(super) repo: Repository,
    /// Where packs and index objects go (locked until `shared_until`).
    pub(super) shared: Store,
    pub(super) shared_until: Option<DateTime<Utc>>,
    /// The write's dedup set of new chunks not indexed yet (`sink.rs`).
    pub(super) seen: Arc<Mutex<HashSet<Id>>>,
    /// Packs uploaded and not indexed yet: deleted if the write fails.
    pub(super) uploaded: Mutex<Vec<Id>>,
    /// Whether packs were indexed before the commit.
    flushed: Mutex<bool>,
    /// Whether any pack was indexed: a write failing afterwards owes prune a sweep.
    indexed: Mutex<bool>,
}

impl Indexer {
    pub(super) fn new(
        repo: Repository,
        shared: Store,
        shared_until: Option<DateTime<Utc>>,
        seen: Arc<Mutex<HashSet<Id>>>,
    ) -> Indexer {
        Indexer {
            repo,
            shared,
            shared_until,
            seen,
            uploaded: Mutex::new(Vec::new()),
            flushed: Mutex::new(false),
            indexed: Mutex::new(false),
        }
    }

    /// Notes a pack about to be uploaded (before the put: a put that fails midway may
    /// still leave it).
    pub(super) fn record_upload(&self, pack: Id) {
        self.uploaded.lock().expect("upload list lock").push(pack);
    }

    /// Indexes `packs` while the write still runs (see the module's documentation).
    pub(super) async fn flush(&self, packs: UploadedPacks) -> Result<(), RepoError> {
        let first = !std::mem::replace(&mut *self.flushed.lock().expect("flush flag lock"), true);
        if first {
            self.repo.catalog().blocking(|c| c.owe_sweep()).await?;
        }
        let ids: Vec<Id> = packs
            .iter()
            .flat_map(|(_, entries)| entries.iter().map(|e| e.id))
            .collect();
        self.index(packs).await?;
        let mut seen = self.seen.lock().expect("dedup set lock");
        for id in ids {
            seen.remove(&id);
        }
        Ok(())
    }

    /// Writes an index object for `packs`, records their locks, and adds their
    /// chunks to the catalog: only now may later writes deduplicate against them.
    /// Once the chunks are in the catalog the packs are no longer this write's to
    /// delete: later writes may rely on them.
    pub(super) async fn index(&self, packs: UploadedPacks) -> Result<(), RepoError> {
        let packed: HashSet<Id> = packs.iter().map(|(id, _)| *id).collect();
        let index = IndexObject { packs };
        let bytes = index.encode(self.repo.keys());
        let key = format!("index/{}", Id::hash(&bytes).to_hex());
        self.shared.put(&key, Bytes::from(bytes)).await?;
        let mut written: Vec<String> = index.packs.iter().map(|(id, _)| pack_key(id)).collect();
        written.push(key);
        self.repo
            .record_shared_locks(written, self.shared_until)
            .await?;
        self.repo
            .catalog()
            .blocking(move |c| c.add_packs(index.packs.iter().map(|(id, e)| (id, &e[..]))))
            .await?;
        *self.indexed.lock().expect("indexed flag lock") = true;
        self.uploaded
            .lock()
            .expect("upload list lock")
            .retain(|id| !packed.contains(id));
        Ok(())
    }

    /// After a failed write: deletes the packs uploaded and not indexed (nothing can
    /// refer to them), and owes prune a sweep for those indexed (nothing may refer
    /// to them either, but only a mark can tell).
    pub(super) async fn delete_unindexed(&self) {
        if *self.indexed.lock().expect("indexed flag lock") {
            let owed = self.repo.catalog().blocking(|c| c.owe_sweep()).await;
            if let Err(e) = owed {
                tracing::warn!(error = %e, "cannot record that prune owes a sweep");
            }
        }
        let packs = std::mem::take(&mut *self.uploaded.lock().expect("upload list lock"));
        for pack in packs {
            if let Err(e) = self.repo.store().delete(&pack_key(&pack)).await {
                tracing::warn!(pack = %pack, error = %e, "could not delete a pack of a failed backup; prune will");
            }
        }
    }
}
