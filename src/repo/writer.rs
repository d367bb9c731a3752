//! Writing a backup: the pipeline and the commit.
//!
//! ```text
//! producers (blocking threads)      compressors (one thread per core)   packer (async task)
//! read → chunk → hash → dedup  ──▶  zstd → seal                    ──▶  pack → upload (2 at a time)
//!                  bounded channel                     bounded channel
//! ```
//!
//! Producers (`archiver.rs` for trees, [`BackupWriter::add_stream`] for streams) hand
//! each chunk to the pipeline's entry, the [`ChunkSink`] (`sink.rs`), which lets only
//! new chunks travel on. Every channel is bounded, so memory stays
//! flat whatever the data size, and the slowest stage sets the pace.
//!
//! [`BackupWriter::commit`] drains the pipeline, then writes the index object, adds
//! the new chunks to the catalog's index, and writes the manifest last (a large write
//! also indexes as it goes: `writer/indexer.rs`). Any failure before the manifest
//! leaves only unreferenced objects; a failed commit or [`BackupWriter::abort`]
//! deletes the packs this write uploaded and did not index, and owes prune a sweep
//! for those it did; prune reclaims what a crash leaves. If any stage fails, the
//! channels close and every stage stops.

mod indexer;
mod parts;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use chrono::Utc;
use tokio::io::AsyncRead;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::archiver::TreeOptions;
use super::crypto::Keys;
use super::id::Id;
use super::lock::WriterLock;
use super::manifest::{BackupMeta, Manifest, PartRecord, new_backup_id};
use super::pack::{ChunkKind, FinishedPack, PackBuilder, PackEntry, encode_blob};
use super::phases::PhaseTimer;
use super::sink::{ChunkSink, PendingChunk};
use super::{RepoError, Repository, checked_name, pack_key};
use indexer::{FLUSH_CHUNKS, Indexer, UploadedPacks};
pub use parts::PartWriter;
use parts::Parts;

/// Batches of chunks waiting for a compressor (a batch is one chunk, or a block of
/// a database's pages of at most [`parts::PAGED_BLOCK`]): a few per core keeps both
/// busy without hoarding.
const CHUNK_QUEUE: usize = 4;
/// Batches of encoded chunks waiting for the packer.
const BLOB_QUEUE: usize = 4;

struct EncodedChunk {
    id: Id,
    kind: ChunkKind,
    raw_length: u32,
    blob: Vec<u8>,
}

/// One backup being written. Add parts, then [`commit`](Self::commit).
pub struct BackupWriter {
    repo: Repository,
    sink: Option<ChunkSink>,
    compressors: Vec<JoinHandle<()>>,
    packer: tokio::task::JoinHandle<Result<UploadedPacks, RepoError>>,
    /// Indexes the uploaded packs, during the write and at its commit.
    indexer: Arc<Indexer>,
    lock: Option<WriterLock>,
    drained: bool,
    parts: Arc<Mutex<Parts>>,
    /// Stops the producers (a child of the write's cancel token): once a part failed,
    /// the others stop rather than run on into a write that will be aborted.
    stop: CancellationToken,
    created: chrono::DateTime<Utc>,
}

impl Repository {
    /// Starts writing a backup.
    pub async fn start_backup(&self, cancel: CancellationToken) -> Result<BackupWriter, RepoError> {
        self.start_backup_expiring(cancel, None).await
    }

    /// Starts writing a backup that will expire at `expires` (`None`: not known yet,
    /// or never): with Object Lock, the date its new data is locked for.
    pub async fn start_backup_expiring(
        &self,
        cancel: CancellationToken,
        expires: Option<chrono::DateTime<Utc>>,
    ) -> Result<BackupWriter, RepoError> {
        // Before anything is written (the lock object first): never into a store
        // that lost its repository.
        let mut phases = PhaseTimer::start("backup.start");
        self.check_repository().await?;
        phases.lap("repository check");
        let lock = self.writers().begin_write().await?;
        let (chunk_tx, chunk_rx) = crossbeam_channel::bounded::<Vec<PendingChunk>>(CHUNK_QUEUE);
        let (blob_tx, blob_rx) = mpsc::channel::<Vec<EncodedChunk>>(BLOB_QUEUE);
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let compressors = (0..workers)
            .map(|n| {
                let (rx, tx, keys, level) = (
                    chunk_rx.clone(),
                    blob_tx.clone(),
                    self.keys().clone(),
                    self.config().compression,
                );
                std::thread::Builder::new()
                    .name(format!("envsnap-compress-{n}"))
                    .spawn(move || compress_loop(rx, tx, keys, level))
                    .expect("spawning a compressor thread")
            })
            .collect();
        // Until when its packs and index objects are locked (Object Lock), if they are.
        let shared_until = self.shared_retention(expires);
        let shared = self.store_retaining(shared_until.map(|until| (until, false)));
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let indexer = Arc::new(Indexer::new(
            self.clone(),
            shared,
            shared_until,
            seen.clone(),
        ));
        let packer = tokio::spawn(pack_loop(
            indexer.clone(),
            self.keys().clone(),
            self.config().pack_size as usize,
            blob_rx,
        ));
        let stop = cancel.child_token();
        let sink = ChunkSink::new(
            self.keys().clone(),
            self.catalog().clone(),
            chunk_tx,
            stop.clone(),
            seen,
        );
        Ok(BackupWriter {
            repo: self.clone(),
            sink: Some(sink),
            compressors,
            packer,
            indexer,
            lock: Some(lock),
            drained: false,
            parts: Arc::default(),
            stop,
            created: Utc::now(),
        })
    }
}

impl BackupWriter {
    fn sink(&self) -> Result<ChunkSink, RepoError> {
        self.sink
            .clone()
            .ok_or_else(|| RepoError::Pipeline("this backup's pipeline has already stopped".into()))
    }

    /// A counter of the content bytes processed so far, for progress reports.
    pub fn progress(&self) -> Arc<AtomicU64> {
        self.sink
            .as_ref()
            .map_or_else(|| Arc::new(AtomicU64::new(0)), ChunkSink::progress)
    }

    /// A handle that adds parts to this backup, several at a time (`writer/parts.rs`).
    /// Drop every handle before [`commit`](Self::commit), [`abort`](Self::abort) or
    /// [`explain`](Self::explain): the pipeline drains only once no one can add to it.
    pub fn part_writer(&self) -> Result<PartWriter, RepoError> {
        Ok(PartWriter {
            repo: self.repo.clone(),
            sink: self.sink()?,
            parts: self.parts.clone(),
        })
    }

    /// Stores a stream part (a database dump) read from `reader` to its end.
    pub async fn add_stream<R>(
        &mut self,
        part: &str,
        format: &str,
        reader: R,
    ) -> Result<PartRecord, RepoError>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let added = self.part_writer()?.add_stream(part, format, reader).await;
        self.explained(added).await
    }

    /// Stores a tree part: the directory `root` and everything below it.
    pub async fn add_tree(
        &mut self,
        part: &str,
        root: std::path::PathBuf,
        options: TreeOptions,
    ) -> Result<PartRecord, RepoError> {
        let added = self.part_writer()?.add_tree(part, root, options).await;
        self.explained(added).await
    }

    async fn explained(
        &mut self,
        added: Result<PartRecord, RepoError>,
    ) -> Result<PartRecord, RepoError> {
        match added {
            Ok(record) => Ok(record),
            Err(e) => Err(self.explain(e).await),
        }
    }

    /// The cause of `error`, an error adding a part: when the pipeline closed under
    /// the part, the stage that failed knows why. Stops the other parts still being
    /// added, and drains the pipeline: the write takes no more data.
    pub async fn explain(&mut self, error: RepoError) -> RepoError {
        let (part, closed) = match &error {
            RepoError::Pipeline(_) => (None, true),
            RepoError::InPart { part, source } => (
                Some(part.clone()),
                matches!(**source, RepoError::Pipeline(_)),
            ),
            _ => (None, false),
        };
        self.stop.cancel();
        match self.drain().await {
            Err(cause) if closed => match part {
                Some(part) => cause.in_part(&part),
                None => cause,
            },
            _ => error,
        }
    }

    /// Drains the pipeline: every new chunk is in an uploaded pack when this returns.
    /// The pipeline runs once: after the first drain, the writer takes no more data.
    async fn drain(&mut self) -> Result<Vec<(Id, Vec<PackEntry>)>, RepoError> {
        if std::mem::replace(&mut self.drained, true) {
            return Err(RepoError::Pipeline(
                "this backup's pipeline has already stopped".into(),
            ));
        }
        self.sink = None;
        for handle in self.compressors.drain(..) {
            let joined = tokio::task::spawn_blocking(move || handle.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                // The packer must be stopped before anyone cleans up: it may index.
                self.packer.abort();
                let _ = (&mut self.packer).await;
                return Err(RepoError::Pipeline("a compressor thread panicked".into()));
            }
        }
        (&mut self.packer)
            .await
            .map_err(|e| RepoError::Pipeline(e.to_string()))?
    }

    /// Makes the backup durable and visible: packs, index object, catalog, manifest.
    pub async fn commit(mut self, meta: BackupMeta) -> Result<Manifest, RepoError> {
        checked_name(&meta.env)?;
        checked_name(&meta.name)?;
        let result = self.commit_inner(meta).await;
        if result.is_err() {
            self.delete_uploaded().await;
        }
        if let Some(lock) = self.lock.take() {
            lock.release().await;
        }
        result
    }

    async fn commit_inner(&mut self, meta: BackupMeta) -> Result<Manifest, RepoError> {
        let mut phases = PhaseTimer::start("backup.commit");
        let packs = self.drain().await?;
        phases.lap("drain");
        let parts = self.parts.lock().expect("parts lock").records();
        if !packs.is_empty() {
            self.indexer.index(packs).await?;
            phases.lap("index");
        }
        // Everything this backup reuses stays locked as long as it (Object Lock).
        let lengthened = self.repo.lengthen_shared_locks(meta.expires).await?;
        if lengthened > 0 {
            phases.lap("lengthen locks");
        }
        let manifest = Manifest {
            format: Manifest::format_for(&parts),
            id: new_backup_id(self.created),
            host: self.repo.host().to_owned(),
            meta,
            created: self.created,
            completed: Utc::now(),
            parts,
        };
        let sealed = manifest.encode(self.repo.keys());
        let key = manifest.key();
        let retention = self.repo.backup_retention(&manifest);
        let store = self.repo.store_retaining(retention);
        // On failure the packs stay, indexed, with no backup referring to them: the
        // failed commit owes the next prune a sweep (`Indexer::delete_unindexed`).
        store.put(&key, Bytes::from(sealed)).await?;
        phases.lap("manifest");
        // The backup is durable now: a failure here only costs a question to the
        // store when this backup is deleted.
        if let Err(e) = self.repo.record_backup_lock(&manifest, retention).await {
            tracing::warn!(error = %e, "cannot record the lock of the new backup's manifest");
        }
        Ok(manifest)
    }

    /// Stops the write and deletes what it uploaded (nothing refers to it).
    pub async fn abort(mut self) {
        self.stop.cancel();
        let _ = self.drain().await;
        self.delete_uploaded().await;
        if let Some(lock) = self.lock.take() {
            lock.release().await;
        }
    }

    async fn delete_uploaded(&self) {
        self.indexer.delete_unindexed().await;
    }
}

fn compress_loop(
    rx: crossbeam_channel::Receiver<Vec<PendingChunk>>,
    tx: mpsc::Sender<Vec<EncodedChunk>>,
    keys: Keys,
    level: i32,
) {
    let mut compressor = zstd::bulk::Compressor::new(level).expect("zstd accepts levels 1 to 19");
    for batch in rx {
        let encoded = batch
            .into_iter()
            .map(|chunk| {
                let blob = encode_blob(&keys, &mut compressor, &chunk.data);
                chunk.stored.fetch_add(blob.len() as u64, Ordering::Relaxed);
                EncodedChunk {
                    id: chunk.id,
                    kind: chunk.kind,
                    raw_length: chunk.data.len() as u32,
                    blob,
                }
            })
            .collect();
        if tx.blocking_send(encoded).is_err() {
            return; // the packer stopped; it reports why
        }
    }
}

async fn pack_loop(
    indexer: Arc<Indexer>,
    keys: Keys,
    pack_size: usize,
    mut rx: mpsc::Receiver<Vec<EncodedChunk>>,
) -> Result<UploadedPacks, RepoError> {
    let mut uploads = PackUploads::new(indexer, pack_size);
    let mut builder = PackBuilder::in_buffer(Vec::new(), pack_size);
    while let Some(batch) = rx.recv().await {
        for chunk in batch {
            builder.add(chunk.id, chunk.kind, chunk.raw_length, &chunk.blob);
            if builder.len() >= pack_size {
                let next = PackBuilder::in_buffer(uploads.spare_buffer(), pack_size);
                let full = std::mem::replace(&mut builder, next);
                uploads.start(full.finish(&keys)).await?;
            }
        }
    }
    if !builder.is_empty() {
        uploads.start(builder.finish(&keys)).await?;
    }
    uploads.finish().await
}

/// The packs a write is uploading, and those uploaded but not indexed yet.
struct PackUploads {
    indexer: Arc<Indexer>,
    /// Packs uploading at once: overlaps network latency; memory stays bounded by
    /// the store's pack budget (`Store::packs_in_flight`).
    slots: Arc<Semaphore>,
    running: JoinSet<Result<(Id, Vec<PackEntry>), RepoError>>,
    done: UploadedPacks,
    /// Buffers of uploaded packs, for the next packs: a first backup otherwise
    /// faulted in a fresh 17 MiB for every pack (126,000 page faults for 517 MB).
    /// A buffer is kept only while it waits for the next pack, at most `keep` (the
    /// slots): no more buffers live at once than without it.
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
    keep: usize,
}

impl PackUploads {
    fn new(indexer: Arc<Indexer>, pack_size: usize) -> Self {
        let slots = indexer.shared.packs_in_flight(pack_size as u64);
        PackUploads {
            indexer,
            slots: Arc::new(Semaphore::new(slots)),
            keep: slots,
            running: JoinSet::new(),
            done: Vec::new(),
            spare: Arc::default(),
        }
    }

    /// A finished upload's buffer, if one is back (else a new one).
    fn spare_buffer(&self) -> Vec<u8> {
        self.spare
            .lock()
            .expect("spare lock")
            .pop()
            .unwrap_or_default()
    }

    /// Starts uploading `pack` once a slot is free; indexes the uploaded packs every
    /// [`FLUSH_CHUNKS`] chunks.
    async fn start(&mut self, pack: FinishedPack) -> Result<(), RepoError> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closes");
        while let Some(finished) = self.running.try_join_next() {
            self.done.push(upload_result(finished)?);
        }
        if self
            .done
            .iter()
            .map(|(_, chunks)| chunks.len())
            .sum::<usize>()
            >= FLUSH_CHUNKS
        {
            self.indexer.flush(std::mem::take(&mut self.done)).await?;
        }
        let (store, indexer) = (self.indexer.shared.clone(), self.indexer.clone());
        let (spare, keep) = (self.spare.clone(), self.keep);
        self.running.spawn(async move {
            let _permit = permit;
            let key = pack_key(&pack.id);
            indexer.record_upload(pack.id);
            let bytes = Bytes::from(pack.bytes);
            store.put(&key, bytes.clone()).await?;
            // Back to a Vec without a copy when the store kept no reference.
            if let Ok(buffer) = bytes.try_into_mut() {
                let mut spare = spare.lock().expect("spare lock");
                if spare.len() < keep {
                    spare.push(Vec::from(buffer));
                }
            }
            Ok::<_, RepoError>((pack.id, pack.entries))
        });
        Ok(())
    }

    /// Waits for the uploads still running: every pack not indexed yet.
    async fn finish(mut self) -> Result<UploadedPacks, RepoError> {
        while let Some(finished) = self.running.join_next().await {
            self.done.push(upload_result(finished)?);
        }
        Ok(self.done)
    }
}

fn upload_result(
    joined: Result<Result<(Id, Vec<PackEntry>), RepoError>, tokio::task::JoinError>,
) -> Result<(Id, Vec<PackEntry>), RepoError> {
    joined.map_err(|e| RepoError::Pipeline(e.to_string()))?
}
