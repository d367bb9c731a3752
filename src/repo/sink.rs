//! The producers' end of the write pipeline (see `writer.rs`): a [`ChunkSink`]
//! hashes each chunk and looks it up, first in this write's own set of new chunks
//! not indexed yet, then in the catalog's chunk index; only new chunks travel on to
//! the compressors, in batches of about [`BATCH_BYTES`]: a tree's small files, or a
//! database cut page by page, would otherwise wake a compressor, and the packer after
//! it, for every few KiB (a first backup of 86,000 files made 250,000 context
//! switches). The sink is cloned into each producer thread (`archiver.rs` for trees,
//! the stream reader in `writer.rs`), each clone with its own batch, sent when full,
//! by [`ChunkSink::finish`] and at the latest when the clone is dropped; a producer
//! stops with a `ProduceError` when its input or the repository fails, or when the
//! write is cancelled.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::crypto::Keys;
use super::error::RepoError;
use super::id::Id;
use super::pack::ChunkKind;
use crate::catalog::Catalog;

/// A new chunk on its way to a compressor.
pub(super) struct PendingChunk {
    pub(super) id: Id,
    pub(super) kind: ChunkKind,
    pub(super) data: Vec<u8>,
    /// The part's stored-bytes counter, grown once the chunk is encoded.
    pub(super) stored: Arc<AtomicU64>,
}

/// New chunks a producer gathers before they travel on together (a large chunk, or
/// a block of a database's pages, goes at once). 1 MiB batches made no faster a
/// first backup of the churn data set, whose peak memory they raised by ~20 MiB
/// (medians of 5 runs: 180 against 158 MiB).
const BATCH_BYTES: usize = 256 << 10;

/// A producer's new chunks not sent yet.
#[derive(Default)]
struct Batch {
    chunks: Vec<PendingChunk>,
    bytes: usize,
}

/// The producers' end of the pipeline; cloned into each producer thread.
pub struct ChunkSink {
    keys: Keys,
    catalog: Catalog,
    seen: Arc<Mutex<HashSet<Id>>>,
    queue: crossbeam_channel::Sender<Vec<PendingChunk>>,
    cancel: CancellationToken,
    /// Bytes of content processed so far (new or not), for progress reports.
    progress: Arc<AtomicU64>,
    /// This clone's new chunks not sent yet. Their ids are in `seen` already, so
    /// the batch must reach the compressors (see [`Drop`]).
    batch: Mutex<Batch>,
}

impl Clone for ChunkSink {
    /// A sink for another producer, with a batch of its own.
    fn clone(&self) -> Self {
        ChunkSink {
            keys: self.keys.clone(),
            catalog: self.catalog.clone(),
            seen: self.seen.clone(),
            queue: self.queue.clone(),
            cancel: self.cancel.clone(),
            progress: self.progress.clone(),
            batch: Mutex::default(),
        }
    }
}

impl Drop for ChunkSink {
    /// Sends what is left: a producer that failed before [`ChunkSink::finish`] must
    /// not leave chunks that `seen` claims are on their way (another producer would
    /// skip them). If the pipeline is gone, the write is failing anyway.
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

impl ChunkSink {
    pub(super) fn new(
        keys: Keys,
        catalog: Catalog,
        queue: crossbeam_channel::Sender<Vec<PendingChunk>>,
        cancel: CancellationToken,
        seen: Arc<Mutex<HashSet<Id>>>,
    ) -> Self {
        ChunkSink {
            keys,
            catalog,
            seen,
            queue,
            cancel,
            progress: Arc::new(AtomicU64::new(0)),
            batch: Mutex::default(),
        }
    }

    /// Hashes a chunk and, unless the repository has it already, queues it for
    /// storing; `stored` grows by its stored size once it is encoded.
    pub fn add(
        &self,
        kind: ChunkKind,
        data: &[u8],
        stored: &Arc<AtomicU64>,
    ) -> Result<Id, RepoError> {
        if self.cancel.is_cancelled() {
            return Err(RepoError::Cancelled);
        }
        let id = self.keys.chunk_id(data);
        if kind == ChunkKind::Data {
            self.progress
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        // The set holds only new chunks not indexed yet (the writer takes them out as
        // it indexes them): it follows what the write adds, not what it reads.
        let seen = |id| self.seen.lock().expect("dedup set lock").contains(&id);
        if seen(id) || self.catalog.has_chunk(&id)? {
            return Ok(id);
        }
        if !self.seen.lock().expect("dedup set lock").insert(id) {
            return Ok(id); // another producer queued it meanwhile
        }
        let pending = PendingChunk {
            id,
            kind,
            data: data.to_vec(),
            stored: stored.clone(),
        };
        self.enqueue([pending])?;
        Ok(id)
    }

    /// As [`Self::add`] for each of `pieces`, in order: the catalog is asked about
    /// them in one read transaction and the new ones travel on as one batch.
    pub fn add_many(
        &self,
        kind: ChunkKind,
        pieces: &[&[u8]],
        stored: &Arc<AtomicU64>,
    ) -> Result<Vec<Id>, RepoError> {
        if self.cancel.is_cancelled() {
            return Err(RepoError::Cancelled);
        }
        let ids: Vec<Id> = pieces.iter().map(|data| self.keys.chunk_id(data)).collect();
        if kind == ChunkKind::Data {
            let bytes: usize = pieces.iter().map(|data| data.len()).sum();
            self.progress.fetch_add(bytes as u64, Ordering::Relaxed);
        }
        let unseen: Vec<usize> = {
            let seen = self.seen.lock().expect("dedup set lock");
            (0..ids.len())
                .filter(|&i| !seen.contains(&ids[i]))
                .collect()
        };
        let unseen_ids: Vec<Id> = unseen.iter().map(|&i| ids[i]).collect();
        let indexed = self.catalog.has_chunks(&unseen_ids)?;
        let mut new = Vec::new();
        let mut seen = self.seen.lock().expect("dedup set lock");
        for (&i, indexed) in unseen.iter().zip(indexed) {
            // Also skips a piece repeated within the batch, and one another
            // producer queued meanwhile.
            if !indexed && seen.insert(ids[i]) {
                new.push(PendingChunk {
                    id: ids[i],
                    kind,
                    data: pieces[i].to_vec(),
                    stored: stored.clone(),
                });
            }
        }
        drop(seen);
        self.enqueue(new)?;
        Ok(ids)
    }

    /// Adds new chunks to this producer's batch, and sends the batch once full.
    fn enqueue(&self, chunks: impl IntoIterator<Item = PendingChunk>) -> Result<(), RepoError> {
        let full = {
            let mut batch = self.batch.lock().expect("batch lock");
            for chunk in chunks {
                batch.bytes += chunk.data.len();
                batch.chunks.push(chunk);
            }
            (batch.bytes >= BATCH_BYTES).then(|| std::mem::take(&mut *batch))
        };
        match full {
            Some(batch) => self.send(batch.chunks),
            None => Ok(()),
        }
    }

    /// Sends this producer's last batch: a producer calls it when done, before its
    /// part counts as stored.
    pub fn finish(&self) -> Result<(), RepoError> {
        let batch = std::mem::take(&mut *self.batch.lock().expect("batch lock"));
        if batch.chunks.is_empty() {
            return Ok(());
        }
        self.send(batch.chunks)
    }

    fn send(&self, batch: Vec<PendingChunk>) -> Result<(), RepoError> {
        self.queue
            .send(batch)
            .map_err(|_| RepoError::Pipeline("a later stage failed".into()))
    }

    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The counter of content bytes processed so far.
    pub(super) fn progress(&self) -> Arc<AtomicU64> {
        self.progress.clone()
    }

    /// Counts content that needed no reading (files reused from the parent).
    pub fn skipped(&self, bytes: u64) {
        self.progress.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// What a producer thread can fail with: reading its input, or the repository.
#[derive(Debug)]
pub(crate) enum ProduceError {
    Io(std::io::Error),
    Repo(RepoError),
}

impl From<std::io::Error> for ProduceError {
    fn from(e: std::io::Error) -> Self {
        ProduceError::Io(e)
    }
}

impl From<RepoError> for ProduceError {
    fn from(e: RepoError) -> Self {
        ProduceError::Repo(e)
    }
}

impl From<ProduceError> for RepoError {
    fn from(e: ProduceError) -> Self {
        match e {
            ProduceError::Io(e) => RepoError::Io {
                path: "input stream".into(),
                source: e,
            },
            ProduceError::Repo(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::pack::PackEntry;

    fn entry(id: Id) -> PackEntry {
        PackEntry {
            id,
            kind: ChunkKind::Data,
            offset: 0,
            length: 1,
            raw_length: 1,
        }
    }

    /// A block's pages: ids for every page in order; queued once each, as one batch,
    /// only those neither indexed, nor queued before, nor repeated earlier in it.
    #[test]
    fn add_many_queues_each_new_page_once_in_one_batch() {
        let catalog = Catalog::in_memory().unwrap();
        let keys = Keys::none();
        let (indexed, queued_before) = (b"indexed".as_slice(), b"queued".as_slice());
        catalog
            .add_packs([(&Id([1; 32]), &[entry(keys.chunk_id(indexed))][..])])
            .unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let seen = Arc::new(Mutex::new(HashSet::from([keys.chunk_id(queued_before)])));
        let sink = ChunkSink::new(keys.clone(), catalog, tx, CancellationToken::new(), seen);
        let stored = Arc::new(AtomicU64::new(0));
        let pieces = [b"a".as_slice(), indexed, b"b", b"a", queued_before, b"c"];
        let ids = sink.add_many(ChunkKind::Data, &pieces, &stored).unwrap();
        let want: Vec<Id> = pieces.iter().map(|p| keys.chunk_id(p)).collect();
        assert_eq!(ids, want);
        assert!(rx.try_recv().is_err(), "a small batch waits for more");
        sink.finish().unwrap();
        let batch = rx.try_recv().unwrap();
        let data: Vec<&[u8]> = batch.iter().map(|c| c.data.as_slice()).collect();
        assert_eq!(data, [b"a".as_slice(), b"b", b"c"]);
        assert!(rx.try_recv().is_err(), "one batch");
        // Nothing new: nothing queued, not even an empty batch.
        sink.add_many(ChunkKind::Data, &[b"a", b"b"], &stored)
            .unwrap();
        sink.finish().unwrap();
        assert!(rx.try_recv().is_err());
    }

    /// Small chunks travel together once they fill a batch; the rest goes at
    /// `finish`, or when the producer's sink is dropped; each clone has its own.
    #[test]
    fn small_chunks_travel_in_batches() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let (catalog, cancel) = (Catalog::in_memory().unwrap(), CancellationToken::new());
        let sink = ChunkSink::new(Keys::none(), catalog, tx, cancel, seen);
        let stored = Arc::new(AtomicU64::new(0));
        let piece = |n: usize| vec![n as u8; BATCH_BYTES / 4 + n];
        for n in 0..5 {
            sink.add(ChunkKind::Data, &piece(n), &stored).unwrap();
        }
        let first = rx.try_recv().unwrap();
        assert_eq!(first.len(), 4, "four quarters fill a batch");
        assert!(rx.try_recv().is_err());
        let producer = sink.clone();
        producer.add(ChunkKind::Data, &piece(5), &stored).unwrap();
        drop(producer);
        assert_eq!(
            rx.try_recv().unwrap()[0].data,
            piece(5),
            "sent when dropped"
        );
        sink.finish().unwrap();
        assert_eq!(rx.try_recv().unwrap()[0].data, piece(4));
        assert!(rx.try_recv().is_err());
    }
}
