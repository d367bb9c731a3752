//! The producers' end of the write pipeline (see `writer.rs`): a [`ChunkSink`]
//! hashes each chunk and looks it up, first in this write's own set of new chunks
//! not indexed yet, then in the catalog's chunk index; only new chunks travel on to
//! the compressors. The sink is
//! cloned into each producer thread (`archiver.rs` for trees, the stream reader in
//! `writer.rs`); a producer stops with a `ProduceError` when its input or the
//! repository fails, or when the write is cancelled.

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

/// The producers' end of the pipeline; cloned into each producer thread.
#[derive(Clone)]
pub struct ChunkSink {
    keys: Keys,
    catalog: Catalog,
    seen: Arc<Mutex<HashSet<Id>>>,
    queue: crossbeam_channel::Sender<PendingChunk>,
    cancel: CancellationToken,
    /// Bytes of content processed so far (new or not), for progress reports.
    progress: Arc<AtomicU64>,
}

impl ChunkSink {
    pub(super) fn new(
        keys: Keys,
        catalog: Catalog,
        queue: crossbeam_channel::Sender<PendingChunk>,
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
        self.queue
            .send(pending)
            .map_err(|_| RepoError::Pipeline("a later stage failed".into()))?;
        Ok(id)
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
