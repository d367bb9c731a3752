//! Prune: delete backups and reclaim the data nothing else needs (mark and sweep).
//!
//! Under the exclusive lock (no write of this process runs meanwhile):
//!
//! 1. delete the manifests asked for;
//! 2. mark: every chunk the remaining manifests reach is live. This reads every
//!    backup's tree, a cost that grows with each backup kept, so it runs only when
//!    a sweep is owed: the catalog records one (`sweep_owed`) before manifests are
//!    deleted, when a write fails after its index object, when a restart finds jobs
//!    a crash interrupted, and for a new catalog; a prune that marked clears it.
//!    Otherwise nothing unreferenced can hide in indexed packs, and prune skips the
//!    mark: its cost then follows the number of packs, not of backups (a prune after
//!    every backup, or at every start-up, stays as cheap on day 300 as on day 1);
//! 3. sweep, pack by pack: a pack with no live chunk is deleted; a pack whose live
//!    bytes are under half of it is repacked (its live blobs copied, after a hash
//!    check, into new packs); a pack no index object names (left by a crash) is
//!    deleted, mark or not. A pack younger than the oldest write still running in
//!    another process is never touched: that write may be about to name it.
//! 4. write one index object for everything kept, replace the catalog's index (only
//!    if a pack left it), delete the old index objects, and only then delete the
//!    packs.
//!
//! A crash at any step leaves a consistent repository: until step 4's deletions, old
//! index objects and packs are all still there; after them, the new index names only
//! packs that exist. Whatever a crash leaves unreferenced, the next prune reclaims:
//! the sweep owed stays recorded until a prune that marked completes.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::id::Id;
use super::index::IndexObject;
use super::manifest::Manifest;
use super::pack::{PackBuilder, PackEntry, decode_blob};
use super::phases::PhaseTimer;
use super::reader::for_each_chunk;
use super::rebuild::StoreIndex;
use super::{RepoError, Repository, pack_key};

/// Under Object Lock, index objects are merged once there are more than this many
/// (each backup writes one, a large one one per 65,536 new chunks): prune's reads stay bounded, and the locked copies a
/// merge leaves behind stay few.
const MERGE_LOCKED_INDEX_ABOVE: usize = 16;

/// A pack whose live bytes fall under this share of its chunk bytes is repacked.
const REPACK_BELOW_LIVE_RATIO: f64 = 0.5;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub manifests_deleted: u64,
    /// Whether this prune marked (read every backup's tree). Without a mark,
    /// `live_chunks` is 0 and only packs no index object names are reclaimed.
    pub marked: bool,
    pub live_chunks: u64,
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    pub packs_written: u64,
    pub packs_kept_for_running_writers: u64,
    /// Stored bytes of the packs deleted, less the bytes of the packs written.
    pub bytes_freed: u64,
    /// Objects no backup needs any more whose Object Lock has not passed yet: a
    /// later prune deletes them (`store.lock`).
    pub waiting_for_lock: u64,
    /// When the first of those locks passes.
    pub next_unlock: Option<DateTime<Utc>>,
}

impl PruneReport {
    fn waited(&mut self, deletable: &super::immutable::Deletable) {
        self.waiting_for_lock += deletable.waiting;
        self.next_unlock = match (self.next_unlock, deletable.next_unlock) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

impl Repository {
    /// Deletes the given manifests, then reclaims unreferenced data. The mark reads
    /// every backup's tree, so it runs only when it can find something: backups are
    /// deleted, or the catalog says a sweep is owed (see the module doc).
    pub async fn prune(&self, delete: &[Manifest]) -> Result<PruneReport, RepoError> {
        let mut phases = PhaseTimer::start("prune");
        self.check_repository().await?;
        let exclusive = self.writers().exclusive().await;
        let oldest_writer = self.writers().oldest_live_writer(&exclusive).await?;
        phases.lap("locks");
        let mut report = PruneReport::default();
        if !delete.is_empty() {
            // Before the first manifest goes: a prune stopped midway leaves it owed.
            self.catalog().blocking(|c| c.owe_sweep()).await?;
        }
        self.delete_manifests(delete, &mut report).await?;
        phases.lap("delete manifests");
        let live = match self.catalog().blocking(|c| c.sweep_owed()).await? {
            true => Some(self.mark().await?),
            false => None,
        };
        report.marked = live.is_some();
        report.live_chunks = live.as_ref().map_or(0, |live| live.len() as u64);
        phases.lap("mark");
        let replaced = self.replaced_index_objects().await?;
        let mut index = self.read_store_index_without(&replaced).await?;
        phases.lap("store index");
        let young = |pack: &Id| -> bool {
            let modified = index.pack_objects.get(pack).map(|o| o.last_modified);
            is_younger(modified, oldest_writer)
        };
        let packs = std::mem::take(&mut index.packs);
        // A locked pack cannot be rewritten smaller: without repacking, a pack goes
        // whole once nothing needs it and its lock has passed.
        let repack = self.lock_policy().is_none();
        let unneeded = self.unneeded_packs().await?;
        let mut sweep = Sweep::plan(packs, &index.unindexed, live.as_ref(), young, repack);
        sweep.drop_unneeded(&unneeded);
        report.packs_kept_for_running_writers = sweep.kept_young;

        let live = live.unwrap_or_default();
        let written = self.repack(&sweep.repack, &live).await?;
        phases.lap("repack");
        report.packs_written = written.len() as u64;
        report.packs_repacked = sweep.repack.len() as u64;
        let written_bytes: u64 = written.iter().map(|(_, _, size)| *size).sum();
        let dropped = !written.is_empty()
            || match self.lock_policy() {
                // Under a lock, unneeded packs stay (stale index objects may name
                // them) until their lock passes: only those in the catalog drop.
                Some(_) => self.drops_indexed_pack(&sweep.doomed).await?,
                None => !sweep.doomed.is_empty(),
            };
        sweep
            .keep
            .extend(written.into_iter().map(|(id, entries, _)| (id, entries)));
        sweep.doomed.extend(sweep.repack.iter().map(|(id, _)| *id));

        // The new index first, then drop the old ones, then the packs.
        let old_index = self.replace_index(sweep.keep, &index, dropped).await?;
        report.waited(&old_index);
        phases.lap("replace index");
        let mut freed = self
            .delete_packs(&sweep.doomed, &index, &mut report)
            .await?;
        let stale = self.deletable_now(replaced.into_iter().collect()).await?;
        report.waited(&stale);
        self.delete_objects(stale.now).await?;
        // Half-written objects of writes that died (local stores only): packs, and
        // the small objects (index, manifests, reports, the status) too.
        freed += self
            .store()
            .remove_partial_uploads("", oldest_writer.unwrap_or_else(Utc::now));
        report.bytes_freed = freed.saturating_sub(written_bytes);
        if report.marked {
            self.catalog().blocking(|c| c.sweep_done()).await?;
        }
        phases.lap("sweep");
        phases.finish();
        Ok(report)
    }

    /// Deletes the manifests asked for (under a lock, those whose lock passed) with
    /// their drill reports.
    async fn delete_manifests(
        &self,
        delete: &[Manifest],
        report: &mut PruneReport,
    ) -> Result<(), RepoError> {
        let keys = delete.iter().map(Manifest::key).collect();
        let deletable = self.deletable_now(keys).await?;
        report.waited(&deletable);
        for manifest in delete.iter().filter(|m| deletable.now.contains(&m.key())) {
            self.store().delete(&manifest.key()).await?;
            self.delete_drill_reports(manifest).await?;
            report.manifests_deleted += 1;
        }
        Ok(())
    }

    /// Deletes the doomed packs (under a lock, those whose lock passed); returns
    /// the bytes they took.
    async fn delete_packs(
        &self,
        doomed: &[Id],
        index: &StoreIndex,
        report: &mut PruneReport,
    ) -> Result<u64, RepoError> {
        let deletable = self
            .deletable_now(doomed.iter().map(pack_key).collect())
            .await?;
        report.waited(&deletable);
        let freed = (doomed.iter())
            .filter(|pack| deletable.now.contains(&pack_key(pack)))
            .filter_map(|pack| index.pack_objects.get(pack))
            .map(|o| o.size)
            .sum();
        report.packs_deleted = deletable.now.len() as u64;
        self.delete_objects(deletable.now).await?;
        Ok(freed)
    }

    /// Whether deleting `doomed` takes a pack out of the catalog's index (under a
    /// lock): packs unneeded ones waiting for their lock are not in it, and need no
    /// new index.
    async fn drops_indexed_pack(&self, doomed: &[Id]) -> Result<bool, RepoError> {
        let doomed = doomed.to_vec();
        let known = self
            .catalog()
            .blocking(move |c| {
                for pack in &doomed {
                    if c.has_pack(pack)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            })
            .await?;
        Ok(known)
    }

    /// Every chunk reachable from a manifest of this host.
    async fn mark(&self) -> Result<HashSet<Id>, RepoError> {
        let manifests = self.list_manifests(None).await?;
        let repo = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut live = HashSet::new();
            for manifest in &manifests {
                for_each_chunk(&repo, manifest, |_, id| {
                    live.insert(id);
                    Ok(())
                })?;
            }
            Ok(live)
        })
        .await
        .map_err(|e| RepoError::Pipeline(e.to_string()))?
    }

    /// Writes one index object for `packs`, points the catalog at it, then deletes
    /// the index objects it replaces (returned: those deleted, and those waiting for
    /// their lock). When no pack left the index (`dropped` false) and the store's
    /// index objects name no missing pack, the catalog already lists exactly these
    /// chunks and is left alone; with one index object and nothing dropped, there is
    /// nothing to write at all. Under Object Lock, the old ones wait for their locks
    /// (no longer read), so index objects are merged when packs left or beyond
    /// [`MERGE_LOCKED_INDEX_ABOVE`] of them: each merge leaves a locked copy behind.
    async fn replace_index(
        &self,
        packs: Vec<(Id, Vec<PackEntry>)>,
        old: &StoreIndex,
        dropped: bool,
    ) -> Result<super::immutable::Deletable, RepoError> {
        let locked = self.lock_policy().is_some();
        let catalog_stale = dropped || (old.names_missing_packs && !locked);
        let many = match locked {
            true => old.index_keys.len() > MERGE_LOCKED_INDEX_ABOVE,
            false => old.index_keys.len() > 1,
        };
        if !catalog_stale && !many {
            return Ok(Default::default());
        }
        let consolidated = IndexObject { packs };
        let bytes = consolidated.encode(self.keys());
        let new_key = format!("index/{}", Id::hash(&bytes).to_hex());
        let until = self.consolidated_index_lock().await?;
        (self.store_retaining(until.map(|u| (u, false))))
            .put(&new_key, Bytes::from(bytes))
            .await?;
        self.record_shared_locks(vec![new_key.clone()], until)
            .await?;
        if catalog_stale {
            self.catalog()
                .blocking(move |c| {
                    c.replace_chunk_index(consolidated.packs.iter().map(|(id, e)| (id, &e[..])))
                })
                .await?;
        }
        let replaced = old.index_keys.iter().filter(|k| **k != new_key).cloned();
        let deletable = self.deletable_now(replaced.collect()).await?;
        self.delete_objects(deletable.now.clone()).await?;
        Ok(deletable)
    }

    /// Deletes `keys`, `store.concurrency` at a time.
    async fn delete_objects(&self, keys: Vec<String>) -> Result<(), RepoError> {
        let store = self.store();
        futures::stream::iter(keys)
            .map(|key| async move { store.delete(&key).await })
            .buffer_unordered(store.concurrency())
            .try_collect::<()>()
            .await?;
        Ok(())
    }

    /// Copies the live blobs of `packs` into new packs; returns them with their sizes.
    async fn repack(
        &self,
        packs: &[(Id, Vec<PackEntry>)],
        live: &HashSet<Id>,
    ) -> Result<Vec<(Id, Vec<PackEntry>, u64)>, RepoError> {
        let pack_size = self.config().pack_size as usize;
        let mut written = Vec::new();
        let mut builder = PackBuilder::default();
        let mut copied = HashSet::new();
        for (pack, entries) in packs {
            let key = pack_key(pack);
            let bytes = self.store().get(&key).await?;
            let by_id: HashMap<Id, &PackEntry> = entries.iter().map(|e| (e.id, e)).collect();
            for entry in by_id.values().filter(|e| live.contains(&e.id)) {
                if !copied.insert(entry.id) {
                    continue;
                }
                let range =
                    entry.offset as usize..(entry.offset + u64::from(entry.length)) as usize;
                let stored = bytes.get(range).ok_or_else(|| RepoError::Corrupt {
                    object: key.clone(),
                    reason: format!("chunk {} lies past the end of the pack", entry.id.short()),
                })?;
                // Never carry corrupt data forward: check before copying.
                decode_blob(self.keys(), stored, entry).map_err(|e| RepoError::Corrupt {
                    object: key.clone(),
                    reason: format!("chunk {}: {e}", entry.id.short()),
                })?;
                builder.add(entry.id, entry.kind, entry.raw_length, stored);
                if builder.len() >= pack_size {
                    written.push(self.upload_pack(std::mem::take(&mut builder)).await?);
                }
            }
        }
        if !builder.is_empty() {
            written.push(self.upload_pack(builder).await?);
        }
        Ok(written)
    }

    async fn upload_pack(
        &self,
        builder: PackBuilder,
    ) -> Result<(Id, Vec<PackEntry>, u64), RepoError> {
        let pack = builder.finish(self.keys());
        let size = pack.bytes.len() as u64;
        self.store()
            .put(&pack_key(&pack.id), Bytes::from(pack.bytes))
            .await?;
        Ok((pack.id, pack.entries, size))
    }
}

/// What the sweep does with each pack.
struct Sweep {
    keep: Vec<(Id, Vec<PackEntry>)>,
    doomed: Vec<Id>,
    repack: Vec<(Id, Vec<PackEntry>)>,
    kept_young: u64,
}

impl Sweep {
    /// Packs a running write may be filling (`young`) are kept. With a mark, a pack
    /// with no live chunk is doomed and one under half live is repacked; without
    /// one, every indexed pack is kept. Packs no index object names are doomed
    /// either way: no backup can refer to them.
    fn plan(
        indexed: HashMap<Id, Vec<PackEntry>>,
        unindexed: &HashSet<Id>,
        live: Option<&HashSet<Id>>,
        young: impl Fn(&Id) -> bool,
        repack: bool,
    ) -> Self {
        let mut sweep = Sweep {
            keep: Vec::new(),
            doomed: Vec::new(),
            repack: Vec::new(),
            kept_young: 0,
        };
        for (pack, entries) in indexed {
            let is_young = young(&pack);
            sweep.kept_young += u64::from(is_young);
            let Some(live) = live.filter(|_| !is_young) else {
                sweep.keep.push((pack, entries));
                continue;
            };
            let total: u64 = entries.iter().map(|e| u64::from(e.length)).sum();
            let live_bytes: u64 = (entries.iter())
                .filter(|e| live.contains(&e.id))
                .map(|e| u64::from(e.length))
                .sum();
            if live_bytes == 0 {
                sweep.doomed.push(pack);
            } else if repack && (live_bytes as f64) < total as f64 * REPACK_BELOW_LIVE_RATIO {
                sweep.repack.push((pack, entries));
            } else {
                sweep.keep.push((pack, entries));
            }
        }
        for pack in unindexed {
            if young(pack) {
                sweep.kept_young += 1;
            } else {
                sweep.doomed.push(*pack);
            }
        }
        sweep
    }
}

impl Sweep {
    /// Packs a prune already found unneeded (waiting for their lock) go whatever a
    /// stale index object says: no backup refers to them.
    fn drop_unneeded(&mut self, unneeded: &HashSet<Id>) {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.keep)
            .into_iter()
            .partition(|(pack, _)| unneeded.contains(pack));
        self.keep = kept;
        self.doomed.extend(gone.into_iter().map(|(pack, _)| pack));
    }
}

/// Whether a pack may belong to a write still running (modified after it started).
fn is_younger(modified: Option<DateTime<Utc>>, oldest_writer: Option<DateTime<Utc>>) -> bool {
    match (modified, oldest_writer) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(modified), Some(started)) => modified >= started - chrono::Duration::seconds(1),
    }
}
