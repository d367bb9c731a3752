//! Rebuilding the chunk index from the store alone.
//!
//! Index objects give most of it in a few reads; packs that no index object names
//! (a crash between a pack upload and its index object) are read from their trailers.
//! Index entries for packs that are gone are dropped. The list of backups needs no
//! rebuilding here: it is the manifests (`Repository::list_manifests`).

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use serde::Serialize;

use super::id::Id;
use super::index::IndexObject;
use super::pack::{PackEntry, decode_entries, footer_len, trailer_len_from_footer};
use super::{RepoError, Repository};
use crate::store::ObjectInfo;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RebuildReport {
    pub packs: u64,
    pub chunks: u64,
    /// Packs read through their trailer because no index object named them.
    pub packs_without_index: u64,
    pub backups: u64,
}

/// Every pack in the store and its chunks, as index objects and trailers tell.
pub(crate) struct StoreIndex {
    pub index_keys: Vec<String>,
    pub packs: HashMap<Id, Vec<PackEntry>>,
    pub pack_objects: HashMap<Id, ObjectInfo>,
    /// Packs present in the store that no index object names.
    pub unindexed: HashSet<Id>,
    /// Whether an index object names a pack the store no longer has.
    pub names_missing_packs: bool,
}

impl Repository {
    /// Every index object and pack of the store, as [`StoreIndex`].
    pub(crate) async fn read_store_index(&self) -> Result<StoreIndex, RepoError> {
        self.read_store_index_without(&HashSet::new()).await
    }

    /// As [`Self::read_store_index`], not reading the index objects `skip` names
    /// (under a lock, those a merge replaced, which wait for their lock to pass).
    pub(crate) async fn read_store_index_without(
        &self,
        skip: &HashSet<String>,
    ) -> Result<StoreIndex, RepoError> {
        let pack_objects: HashMap<Id, ObjectInfo> = self
            .store()
            .list("packs")
            .await?
            .into_iter()
            .filter_map(|o| Some((Id::from_hex(o.key.rsplit('/').next()?)?, o)))
            .collect();
        let mut packs = HashMap::new();
        let mut index_keys = Vec::new();
        let mut names_missing_packs = false;
        let mut objects = self.store().list("index").await?;
        objects.retain(|o| !skip.contains(&o.key));
        let mut fetched = futures::stream::iter(objects)
            .map(|object| async move {
                let raw = self.store().get(&object.key).await;
                (object, raw)
            })
            .buffered(self.store().concurrency());
        while let Some((object, raw)) = fetched.next().await {
            let index = IndexObject::decode(self.keys(), &raw?)
                .map_err(|e| RepoError::corrupt(&object.key, e))?;
            for (pack, entries) in index.packs {
                if pack_objects.contains_key(&pack) {
                    packs.insert(pack, entries);
                } else {
                    names_missing_packs = true;
                }
            }
            index_keys.push(object.key);
        }
        let unindexed: HashSet<Id> = pack_objects
            .keys()
            .filter(|p| !packs.contains_key(*p))
            .copied()
            .collect();
        Ok(StoreIndex {
            index_keys,
            packs,
            pack_objects,
            unindexed,
            names_missing_packs,
        })
    }

    /// Reads a pack's trailer with two range reads.
    pub(crate) async fn read_trailer(
        &self,
        key: &str,
        size: u64,
    ) -> Result<Vec<PackEntry>, RepoError> {
        if size < footer_len() {
            return Err(RepoError::Corrupt {
                object: key.to_owned(),
                reason: "too short to be a pack".into(),
            });
        }
        let footer = self
            .store()
            .get_range(key, size - footer_len()..size)
            .await?;
        let trailer_len =
            trailer_len_from_footer(&footer).map_err(|e| RepoError::corrupt(key, e))?;
        let data_len = (size - footer_len())
            .checked_sub(trailer_len)
            .ok_or_else(|| RepoError::Corrupt {
                object: key.to_owned(),
                reason: "trailer longer than the pack".into(),
            })?;
        let sealed = self
            .store()
            .get_range(key, data_len..size - footer_len())
            .await?;
        let plain = self.keys().open(&sealed).map_err(|_| RepoError::Corrupt {
            object: key.to_owned(),
            reason: "trailer failed authentication".into(),
        })?;
        decode_entries(&plain, data_len).map_err(|e| RepoError::corrupt(key, e))
    }

    /// Recreates the catalog's chunk index from the store.
    pub async fn rebuild_index(&self) -> Result<RebuildReport, RepoError> {
        // Under the exclusive lock, as prune: a prune replacing the index objects
        // meanwhile made the rebuild read one it had just deleted, and a write
        // indexing meanwhile would have its chunks dropped by the replacement.
        let _exclusive = self.writers().exclusive().await;
        let mut index = self.read_store_index().await?;
        let mut report = RebuildReport {
            packs_without_index: index.unindexed.len() as u64,
            ..Default::default()
        };
        for pack in std::mem::take(&mut index.unindexed) {
            let object = &index.pack_objects[&pack];
            match self.read_trailer(&object.key, object.size).await {
                Ok(entries) => {
                    index.packs.insert(pack, entries);
                }
                Err(e) => {
                    tracing::warn!(pack = %object.key, error = %e, "unreadable pack left out of the index")
                }
            }
        }
        report.packs = index.packs.len() as u64;
        report.chunks = index.packs.values().map(|e| e.len() as u64).sum();
        report.backups = self.list_manifests(None).await?.len() as u64;
        let packs = index.packs;
        let mut shared: Vec<String> = packs.keys().map(super::pack_key).collect();
        shared.extend(index.index_keys);
        self.catalog()
            .blocking(move |c| c.replace_chunk_index(packs.iter().map(|(id, e)| (id, &e[..]))))
            .await?;
        self.forget_lock_dates(shared).await?;
        Ok(report)
    }
}
