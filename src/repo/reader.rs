//! Reading chunks back: index lookup, fetch, decode, hash check.
//!
//! Every chunk is checked against its id before it is used; a missing chunk, a
//! missing pack or bytes that do not match are errors naming the object, never
//! silently wrong data. Blocking readers ([`ChunkStreamReader`], [`TreeEntries`]) are
//! for code on blocking threads (the archiver, the tar export); they drive the async
//! store through the runtime handle captured when they were made.

use std::io::{self, Read};

use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::id::Id;
use super::manifest::{Manifest, PartLayout, PartRecord};
use super::pack::{MAX_READ_SPAN, PackEntry, decode_blob};
use super::tree::{Entry, read_entry};
use super::{RepoError, Repository, pack_key};

impl Repository {
    /// Where a chunk is stored, from the catalog's index.
    pub(crate) async fn locate(&self, id: Id) -> Result<(Id, PackEntry), RepoError> {
        let location = self
            .catalog()
            .blocking(move |c| c.chunk_location(&id))
            .await?;
        let location = location.ok_or_else(|| RepoError::UnknownChunk { chunk: id.to_hex() })?;
        Ok((location.pack, location.entry))
    }

    /// Fetches and checks one chunk.
    pub async fn load_chunk(&self, id: Id) -> Result<Vec<u8>, RepoError> {
        let (pack, entry) = self.locate(id).await?;
        let key = pack_key(&pack);
        let stored = self
            .store()
            .get_range(&key, entry.offset..entry.offset + u64::from(entry.length))
            .await?;
        decode_blob(self.keys(), &stored, &entry).map_err(|e| RepoError::Corrupt {
            object: key,
            reason: format!("chunk {}: {e}", id.short()),
        })
    }

    /// Locates `chunks` and splits them, in order, into runs that one range read
    /// serves: neighbours in a pack, within [`MAX_READ_SPAN`].
    async fn locate_runs(&self, chunks: Vec<Id>) -> Result<Vec<(Id, Vec<PackEntry>)>, RepoError> {
        let (located, chunks) = self
            .catalog()
            .blocking(move |c| Ok((c.chunk_locations(&chunks)?, chunks)))
            .await?;
        let mut runs: Vec<(Id, Vec<PackEntry>)> = Vec::new();
        for (id, location) in chunks.into_iter().zip(located) {
            let location =
                location.ok_or_else(|| RepoError::UnknownChunk { chunk: id.to_hex() })?;
            let entry = location.entry;
            let joins = runs.last().is_some_and(|(pack, run)| {
                let (first, last) = (&run[0], &run[run.len() - 1]);
                *pack == location.pack
                    && entry.offset == last.offset + u64::from(last.length)
                    && entry.offset + u64::from(entry.length) - first.offset <= MAX_READ_SPAN
            });
            match runs.last_mut() {
                Some((_, run)) if joins => run.push(entry),
                _ => runs.push((location.pack, vec![entry])),
            }
        }
        Ok(runs)
    }

    /// Fetches a run of neighbouring chunks in one range read; checks each.
    async fn load_run(&self, pack: Id, entries: Vec<PackEntry>) -> Result<Vec<Vec<u8>>, RepoError> {
        let key = pack_key(&pack);
        let start = entries[0].offset;
        let last = &entries[entries.len() - 1];
        let stored = (self.store())
            .get_range(&key, start..last.offset + u64::from(last.length))
            .await?;
        (entries.iter())
            .map(|entry| {
                let corrupt = |reason: String| RepoError::Corrupt {
                    object: key.clone(),
                    reason: format!("chunk {}: {reason}", entry.id.short()),
                };
                let from = (entry.offset - start) as usize;
                let blob = (stored.get(from..from + entry.length as usize))
                    .ok_or_else(|| corrupt("the store returned a short range".into()))?;
                decode_blob(self.keys(), blob, entry).map_err(|e| corrupt(e.to_string()))
            })
            .collect()
    }

    /// Writes a stream part to `out`, every chunk checked; returns the bytes written.
    pub async fn read_stream<W: AsyncWrite + Unpin>(
        &self,
        manifest: &Manifest,
        part: &str,
        out: &mut W,
    ) -> Result<u64, RepoError> {
        let record = part_of(manifest, part, PartLayout::Stream)?;
        let _reading = self.writers().begin_read().await;
        let runs = self
            .locate_runs(record.chunks.clone())
            .await
            .map_err(|e| e.in_part(part))?;
        // Runs fetched ahead while streaming the part out.
        let mut loaded = futures::stream::iter(runs)
            .map(|(pack, entries)| self.load_run(pack, entries))
            .buffered(self.store().concurrency());
        let mut written = 0u64;
        while let Some(chunks) = loaded.try_next().await.map_err(|e| e.in_part(part))? {
            for data in chunks {
                out.write_all(&data)
                    .await
                    .map_err(|e| RepoError::io("output", e))?;
                written += data.len() as u64;
            }
        }
        out.flush().await.map_err(|e| RepoError::io("output", e))?;
        Ok(written)
    }
}

/// A part of a manifest with the expected layout.
pub fn part_of<'m>(
    manifest: &'m Manifest,
    part: &str,
    layout: PartLayout,
) -> Result<&'m PartRecord, RepoError> {
    let record = manifest
        .part(part)
        .ok_or_else(|| RepoError::NoSuchPart(part.to_owned()))?;
    if record.layout != layout {
        let name = |l: PartLayout| {
            if l == PartLayout::Tree {
                "tree"
            } else {
                "stream"
            }
        };
        return Err(RepoError::WrongLayout {
            part: part.to_owned(),
            found: name(record.layout),
            wanted: name(layout),
        });
    }
    Ok(record)
}

/// A blocking reader over a list of chunks, for use on blocking threads.
///
/// A task on the runtime fetches the chunks ahead, `store.concurrency` at a time,
/// so a tree or a part read over a link with latency waits for one round trip per
/// window of chunks, not per chunk. Dropping the reader stops the task.
pub struct ChunkStreamReader {
    loaded: tokio::sync::mpsc::Receiver<Result<Vec<u8>, RepoError>>,
    fetcher: tokio::task::JoinHandle<()>,
    /// Chunks not yet received: the end of the channel before the last one is an
    /// error, never a short read.
    remaining: usize,
    current: Vec<u8>,
    position: usize,
}

impl ChunkStreamReader {
    pub fn new(repo: &Repository, chunks: &[Id]) -> Self {
        let (sender, loaded) = tokio::sync::mpsc::channel(1);
        let (repo, chunks, chunks_len) = (repo.clone(), chunks.to_vec(), chunks.len());
        let fetcher = tokio::runtime::Handle::current().spawn(async move {
            let ahead = repo.store().concurrency();
            let mut fetched = futures::stream::iter(chunks)
                .map(|id| {
                    let repo = repo.clone();
                    async move { repo.load_chunk(id).await }
                })
                .buffered(ahead);
            while let Some(chunk) = fetched.next().await {
                let failed = chunk.is_err();
                if sender.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        });
        ChunkStreamReader {
            loaded,
            fetcher,
            remaining: chunks_len,
            current: Vec::new(),
            position: 0,
        }
    }
}

impl Drop for ChunkStreamReader {
    fn drop(&mut self) {
        self.fetcher.abort();
    }
}

impl Read for ChunkStreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.position == self.current.len() {
            if self.remaining == 0 {
                return Ok(0);
            }
            let chunk = self.loaded.blocking_recv().ok_or_else(|| {
                io::Error::other(RepoError::Pipeline("the chunk fetcher stopped".into()))
            })?;
            self.current = chunk.map_err(io::Error::other)?;
            self.remaining -= 1;
            self.position = 0;
        }
        let n = buf.len().min(self.current.len() - self.position);
        buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

/// The entries of a tree part, in tree order (blocking; validated as read).
pub struct TreeEntries {
    reader: io::BufReader<ChunkStreamReader>,
    part: String,
    failed: bool,
}

impl TreeEntries {
    pub fn open(repo: &Repository, part: &PartRecord) -> Result<Self, RepoError> {
        if part.layout != PartLayout::Tree {
            return Err(RepoError::WrongLayout {
                part: part.part.clone(),
                found: "stream",
                wanted: "tree",
            });
        }
        Ok(TreeEntries {
            reader: io::BufReader::with_capacity(
                1 << 16,
                ChunkStreamReader::new(repo, &part.chunks),
            ),
            part: part.part.clone(),
            failed: false,
        })
    }
}

impl Iterator for TreeEntries {
    type Item = Result<Entry, RepoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match read_entry(&mut self.reader) {
            Ok(entry) => entry.map(Ok),
            Err(e) => {
                self.failed = true;
                // Errors from the store come wrapped in io::Error; unwrap them.
                let error = match e.downcast::<RepoError>() {
                    Ok(repo_error) => repo_error,
                    Err(e) => RepoError::Corrupt {
                        object: format!("tree of {}", self.part),
                        reason: e.to_string(),
                    },
                };
                Some(Err(error.in_part(&self.part)))
            }
        }
    }
}

/// Calls `visit` with every chunk a backup needs, part by part: a stream's chunks, a
/// tree's own chunks and the chunks of every file in it (blocking: reads the trees).
pub fn for_each_chunk(
    repo: &Repository,
    manifest: &Manifest,
    mut visit: impl FnMut(&str, Id) -> Result<(), RepoError>,
) -> Result<(), RepoError> {
    for part in &manifest.parts {
        for id in &part.chunks {
            visit(&part.part, *id)?;
        }
        if part.layout == PartLayout::Tree {
            for entry in TreeEntries::open(repo, part)? {
                for chunk in entry?.chunks {
                    visit(&part.part, chunk.id)?;
                }
            }
        }
    }
    Ok(())
}
