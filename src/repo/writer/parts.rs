//! Adding parts to a backup, several at a time.
//!
//! A [`PartWriter`] is a handle on one backup's pipeline that any number of tasks
//! hold at once, each adding its own parts: a database dump runs beside a tree walk
//! instead of after it. The manifest lists parts in the order [`PartWriter::reserve`]
//! gave (the environment's), then the others in the order they started, each
//! companion right after its main part, whatever order they end in.
//!
//! Errors come back as the producer saw them: when the pipeline closed under it,
//! the stage that failed knows why, and the backup writer's `explain` asks it once
//! every part has stopped.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncRead;

use crate::repo::archiver::{self, TreeOptions};
use crate::repo::chunker::{Chunker, ChunkerParams, fixed_chunks};
use crate::repo::id::Id;
use crate::repo::manifest::{PartLayout, PartRecord};
use crate::repo::pack::ChunkKind;
use crate::repo::readahead::ReadAhead;
use crate::repo::sink::{ChunkSink, ProduceError};
use crate::repo::{RepoError, Repository};

/// The pages of a paged stream looked up and queued at once (1 MiB: 256 pages of
/// 4 KiB): a compressor, and the packer after it, wakes once per block, not per page.
pub(super) const PAGED_BLOCK: usize = 1 << 20;

/// The parts of one backup, in the order they were started.
#[derive(Default)]
pub(super) struct Parts {
    slots: Vec<Slot>,
}

struct Slot {
    name: String,
    /// Whether the part was started (a reserved slot is not, yet).
    started: bool,
    /// Set when the part is complete; a part that failed leaves its slot empty.
    record: Option<PartRecord>,
    /// The bytes its new chunks took once encoded (final after the pipeline drains).
    stored: Arc<AtomicU64>,
}

impl Parts {
    fn slot(&mut self, name: &str) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.name == name)
    }

    fn new_slot(name: &str, started: bool) -> Slot {
        Slot {
            name: name.to_owned(),
            started,
            record: None,
            stored: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Starts the part `name` in its reserved slot or a new one (a companion's goes
    /// after its main part's); refuses an empty or repeated name. Returns the
    /// counter of the bytes it stores.
    fn start(&mut self, name: &str) -> Result<Arc<AtomicU64>, RepoError> {
        let twice = || RepoError::Pipeline(format!("part {name:?} is empty or added twice"));
        if name.is_empty() {
            return Err(twice());
        }
        if let Some(slot) = self.slot(name) {
            if std::mem::replace(&mut slot.started, true) {
                return Err(twice());
            }
            return Ok(slot.stored.clone());
        }
        let slot = Self::new_slot(name, true);
        let stored = slot.stored.clone();
        let after_main = name.split_once('/').and_then(|(main, _)| {
            let of_main = |s: &Slot| s.name == main || s.name.starts_with(&format!("{main}/"));
            self.slots.iter().rposition(of_main)
        });
        match after_main {
            Some(at) => self.slots.insert(at + 1, slot),
            None => self.slots.push(slot),
        }
        Ok(stored)
    }

    fn complete(&mut self, record: PartRecord) {
        if let Some(slot) = self.slot(&record.part) {
            slot.record = Some(record);
        }
    }

    /// The completed parts, in order, with the bytes each stored.
    pub(super) fn records(&self) -> Vec<PartRecord> {
        let complete = self.slots.iter().filter_map(|slot| {
            let mut record = slot.record.clone()?;
            record.stored = slot.stored.load(Ordering::Relaxed);
            Some(record)
        });
        complete.collect()
    }
}

/// A handle that adds parts to one backup; clones add theirs side by side.
#[derive(Clone)]
pub struct PartWriter {
    pub(super) repo: Repository,
    pub(super) sink: ChunkSink,
    pub(super) parts: Arc<Mutex<Parts>>,
}

impl PartWriter {
    fn parts(&self) -> std::sync::MutexGuard<'_, Parts> {
        self.parts.lock().expect("parts lock")
    }

    /// Fixes the order of the parts `names` in the manifest, before any starts.
    pub fn reserve<'n>(&self, names: impl IntoIterator<Item = &'n str>) {
        let mut parts = self.parts();
        for name in names {
            if parts.slot(name).is_none() {
                parts.slots.push(Parts::new_slot(name, false));
            }
        }
    }

    fn complete(&self, record: PartRecord) -> PartRecord {
        self.parts().complete(record.clone());
        record
    }

    /// Stores a stream part (a database dump) read from `reader` to its end.
    pub async fn add_stream<R>(
        &self,
        part: &str,
        format: &str,
        reader: R,
    ) -> Result<PartRecord, RepoError>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        self.store_stream(part, format, reader, None).await
    }

    /// Stores a stream part changed in place in blocks of `page` bytes (a SQLite
    /// database): cut every `page` bytes, so a backup stores again only the pages
    /// that changed, and listed (`manifest.rs`), so its manifest stays small.
    pub async fn add_paged_stream<R>(
        &self,
        part: &str,
        format: &str,
        reader: R,
        page: usize,
    ) -> Result<PartRecord, RepoError>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        self.store_stream(part, format, reader, Some(page)).await
    }

    async fn store_stream<R>(
        &self,
        part: &str,
        format: &str,
        reader: R,
        page: Option<usize>,
    ) -> Result<PartRecord, RepoError>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let stored = self.parts().start(part)?;
        let (sink, params) = (self.sink.clone(), self.repo.config().chunker);
        let reader = ReadAhead::spawn(reader);
        let written =
            tokio::task::spawn_blocking(move || chunk_stream(&sink, params, reader, page, &stored))
                .await
                .map_err(|e| RepoError::Pipeline(e.to_string()))?;
        let (size, chunks) = written.map_err(|e| RepoError::from(e).in_part(part))?;
        let record = PartRecord {
            part: part.to_owned(),
            layout: PartLayout::Stream,
            format: format.to_owned(),
            size,
            stored: 0,
            entries: 0,
            keys: None,
            listed: page.is_some(),
            file: None,
            duration_ms: None,
            chunks,
        };
        Ok(self.complete(record))
    }

    /// Adds what a source learnt beside the stream of its completed part `part`
    /// (Redis's key count, a database file's owner) to the part's record.
    pub fn amend(&self, part: &str, change: impl FnOnce(&mut PartRecord)) {
        let mut parts = self.parts();
        if let Some(record) = parts.slot(part).and_then(|s| s.record.as_mut()) {
            change(record);
        }
    }

    /// Stores a tree part: the directory `root` and everything below it.
    pub async fn add_tree(
        &self,
        part: &str,
        root: std::path::PathBuf,
        options: TreeOptions,
    ) -> Result<PartRecord, RepoError> {
        let stored = self.parts().start(part)?;
        let (repo, sink) = (self.repo.clone(), self.sink.clone());
        let archived = tokio::task::spawn_blocking(move || {
            archiver::archive(&repo, &sink, &root, options, &stored)
        })
        .await
        .map_err(|e| RepoError::Pipeline(e.to_string()))?;
        let tree = archived.map_err(|e| e.in_part(part))?;
        for warning in &tree.warnings {
            tracing::warn!(part, "{warning}");
        }
        let record = PartRecord {
            part: part.to_owned(),
            layout: PartLayout::Tree,
            format: String::new(),
            size: tree.size,
            stored: 0,
            entries: tree.entries,
            keys: None,
            listed: false,
            file: None,
            duration_ms: None,
            chunks: tree.chunks,
        };
        Ok(self.complete(record))
    }
}

/// Cuts a stream into chunks (content-defined, or every `page` bytes and then
/// listed) and hands them to the pipeline; its size and its part's chunk ids.
fn chunk_stream(
    sink: &ChunkSink,
    params: ChunkerParams,
    reader: impl Read,
    page: Option<usize>,
    stored: &Arc<AtomicU64>,
) -> Result<(u64, Vec<Id>), ProduceError> {
    let mut chunks = Vec::new();
    let size = match page {
        None => Chunker::new(params).chunk_reader(reader, |data: &[u8]| {
            chunks.push(sink.add(ChunkKind::Data, data, stored)?);
            Ok::<_, ProduceError>(())
        })?,
        // Blocks of whole pages, each block's pages looked up and queued at once:
        // the same cuts as page by page.
        Some(page) => {
            let pages_per_block = (PAGED_BLOCK / page).max(1);
            fixed_chunks(reader, page * pages_per_block, |block: &[u8]| {
                let pieces: Vec<&[u8]> = block.chunks(page).collect();
                chunks.extend(sink.add_many(ChunkKind::Data, &pieces, stored)?);
                Ok::<_, ProduceError>(())
            })?
        }
    };
    if page.is_some() {
        chunks = store_chunk_list(sink, params, &chunks, stored)?;
    }
    sink.finish()?;
    Ok((size, chunks))
}

/// Stores the ids `chunks` of a listed stream as chunks of their own (32 bytes per
/// id, cut like a tree stream) and returns those chunks' ids.
fn store_chunk_list(
    sink: &ChunkSink,
    params: ChunkerParams,
    chunks: &[Id],
    stored: &Arc<AtomicU64>,
) -> Result<Vec<Id>, RepoError> {
    let mut list: Vec<u8> = chunks.iter().flat_map(|id| id.0).collect();
    let mut listed = Vec::new();
    Chunker::new(params).drain_chunks(&mut list, true, |piece| {
        listed.push(sink.add(ChunkKind::Tree, piece, stored)?);
        Ok::<_, RepoError>(())
    })?;
    Ok(listed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(parts: &mut Parts, name: &str) {
        parts.start(name).unwrap();
        parts.complete(PartRecord {
            part: name.to_owned(),
            layout: PartLayout::Stream,
            format: String::new(),
            size: 0,
            stored: 0,
            entries: 0,
            keys: None,
            listed: false,
            file: None,
            duration_ms: None,
            chunks: Vec::new(),
        });
    }

    fn names(parts: &Parts) -> Vec<String> {
        parts.records().into_iter().map(|r| r.part).collect()
    }

    #[test]
    fn parts_are_listed_in_reserved_order_whatever_order_they_end_in() {
        let mut parts = Parts::default();
        for name in ["code", "files:a", "database:main", "database:other"] {
            parts.slots.push(Parts::new_slot(name, false));
        }
        done(&mut parts, "database:other");
        done(&mut parts, "database:main");
        done(&mut parts, "database:other/roles");
        done(&mut parts, "database:main/roles");
        done(&mut parts, "code");
        done(&mut parts, "extra");
        // files:a failed: its slot stays empty and is not listed.
        parts.start("files:a").unwrap();
        assert_eq!(
            names(&parts),
            [
                "code",
                "database:main",
                "database:main/roles",
                "database:other",
                "database:other/roles",
                "extra"
            ]
        );
    }

    #[test]
    fn a_part_starts_once() {
        let mut parts = Parts::default();
        parts.slots.push(Parts::new_slot("code", false));
        parts.start("code").unwrap();
        let twice = parts.start("code").unwrap_err().to_string();
        assert!(
            twice.contains("\"code\" is empty or added twice"),
            "{twice}"
        );
        assert!(parts.start("").is_err());
        parts.start("new").unwrap();
        assert!(parts.start("new").is_err());
    }
}
