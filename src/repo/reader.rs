//! Reading chunks back: index lookup, fetch, decode, hash check.
//!
//! Every chunk is checked against its id before it is used; a missing chunk, a
//! missing pack or bytes that do not match are errors naming the object, never
//! silently wrong data. Blocking readers ([`ChunkStreamReader`], [`TreeEntries`]) are
//! for code on blocking threads (the archiver, the tar export); they drive the async
//! store through the runtime handle captured when they were made.

use std::collections::HashMap;
use std::io::{self, Read};

use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::id::Id;
use super::manifest::{Manifest, PartLayout, PartRecord};
use super::pack::{PackEntry, decode_blob};
use super::spans::{FetchedSpan, read_spans};
use super::tree::{Entry, read_entry};
use super::{RepoError, Repository, pack_key};

/// Bytes of a stream part gathered before each write to its output.
const OUTPUT_BUFFER: usize = 1 << 20;
/// Content bytes of a stream read per window (`load_in_order`); at most four windows
/// are in memory at once (two loading, one ready, one being written), each at most
/// this plus one chunk.
const WINDOW_BYTES: u64 = 8 << 20;

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

    /// Where each of `chunks` is stored, in order.
    async fn locate_all(&self, chunks: Vec<Id>) -> Result<Vec<(Id, PackEntry)>, RepoError> {
        let (located, chunks) = self
            .catalog()
            .blocking(move |c| Ok((c.chunk_locations(&chunks)?, chunks)))
            .await?;
        (chunks.into_iter().zip(located))
            .map(|(id, location)| {
                let location =
                    location.ok_or_else(|| RepoError::UnknownChunk { chunk: id.to_hex() })?;
                Ok((location.pack, location.entry))
            })
            .collect()
    }

    /// The content of `chunks`, in order, a window of about [`WINDOW_BYTES`] at a
    /// time. The windows load in a task of their own, the next ones while the caller
    /// writes one out: loaded by the caller's stream itself, a window progressed only
    /// while the caller asked for the next, and a tool fed from it (`pg_restore`)
    /// waited for each window's fetch and decode in turn. Within a window
    /// the chunks of each pack are fetched together, in the pack's order
    /// (`spans.rs`): a SQLite part restored after days of changes has its pages
    /// spread over every day's pack, and read in the stream's order nearly every
    /// page was a range read of its own.
    async fn load_in_order(
        &self,
        chunks: Vec<Id>,
    ) -> Result<impl futures::Stream<Item = Result<Vec<Vec<u8>>, RepoError>> + '_, RepoError> {
        let located = self.locate_all(chunks).await?;
        let mut windows = Vec::new();
        let (mut start, mut bytes) = (0, 0u64);
        for (i, (_, entry)) in located.iter().enumerate() {
            bytes += u64::from(entry.raw_length);
            if bytes >= WINDOW_BYTES || i + 1 == located.len() {
                windows.push(located[start..=i].to_vec());
                (start, bytes) = (i + 1, 0);
            }
        }
        let (ready, mut receiver) = tokio::sync::mpsc::channel(1);
        let repo = self.clone();
        let loader = tokio::spawn(async move {
            let mut loading = futures::stream::iter(windows)
                .map(|window| repo.load_window(window))
                .buffered(2);
            while let Some(window) = loading.next().await {
                let failed = window.is_err();
                if ready.send(window).await.is_err() || failed {
                    return;
                }
            }
        });
        let loader = tokio_util::task::AbortOnDropHandle::new(loader);
        Ok(futures::stream::poll_fn(move |cx| {
            // Owned by the stream: dropping it (the caller gave up) stops the loading.
            let _loading = &loader;
            receiver.poll_recv(cx)
        }))
    }

    /// Fetches and checks the chunks of one window; returns them in its order.
    async fn load_window(&self, window: Vec<(Id, PackEntry)>) -> Result<Vec<Vec<u8>>, RepoError> {
        let mut by_pack: HashMap<Id, HashMap<Id, PackEntry>> = HashMap::new();
        for (pack, entry) in &window {
            by_pack.entry(*pack).or_default().insert(entry.id, *entry);
        }
        let reads = (by_pack.into_iter()).flat_map(|(pack, entries)| {
            let spans = read_spans(entries.into_values().collect());
            spans.into_iter().map(move |span| (pack, span))
        });
        let mut loaded: HashMap<Id, Vec<u8>> = futures::stream::iter(reads)
            .map(|(pack, span)| self.load_span(pack, span))
            .buffer_unordered(self.store().concurrency())
            .try_fold(HashMap::new(), |mut loaded, chunks| async move {
                loaded.extend(chunks);
                Ok(loaded)
            })
            .await?;
        // A chunk can repeat (pages of zeroes): each but its last use takes a copy.
        let mut uses: HashMap<Id, usize> = HashMap::new();
        for (_, entry) in &window {
            *uses.entry(entry.id).or_default() += 1;
        }
        (window.iter())
            .map(|(_, entry)| {
                let left = uses.get_mut(&entry.id).expect("counted");
                *left -= 1;
                let data = match *left {
                    0 => loaded.remove(&entry.id),
                    _ => loaded.get(&entry.id).cloned(),
                };
                data.ok_or_else(|| RepoError::UnknownChunk {
                    chunk: entry.id.to_hex(),
                })
            })
            .collect()
    }

    /// Fetches one span of a pack in one range read; checks each of its chunks on a
    /// blocking thread (a window's spans decode on both cores, not on the task that
    /// reads the stream).
    async fn load_span(
        &self,
        pack: Id,
        entries: Vec<PackEntry>,
    ) -> Result<Vec<(Id, Vec<u8>)>, RepoError> {
        let span = FetchedSpan::fetch(self, pack, &entries).await?;
        let decode = move || {
            (entries.iter())
                .map(|entry| Ok((entry.id, span.decode(entry)?)))
                .collect()
        };
        tokio::task::spawn_blocking(decode)
            .await
            .map_err(|e| RepoError::Pipeline(e.to_string()))?
    }

    /// The chunks holding a stream part's content, in order: the part's own, or for
    /// a listed part the ones its list names.
    async fn stream_chunks(&self, record: &PartRecord) -> Result<Vec<Id>, RepoError> {
        if !record.listed {
            return Ok(record.chunks.clone());
        }
        let mut list = Vec::new();
        let mut loaded = self.load_in_order(record.chunks.clone()).await?;
        while let Some(chunks) = loaded.try_next().await? {
            list.extend(chunks.concat());
        }
        parse_chunk_list(&list, record)
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
        let chunks = self
            .stream_chunks(record)
            .await
            .map_err(|e| e.in_part(part))?;
        let mut loaded = self
            .load_in_order(chunks)
            .await
            .map_err(|e| e.in_part(part))?;
        // Chunks can be a page each (SQLite): one write per chunk would be one
        // system call, and for a tokio file one blocking task, per 4 KiB.
        let mut out = tokio::io::BufWriter::with_capacity(OUTPUT_BUFFER, out);
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

/// The ids in a listed stream's chunk list (`manifest.rs`): 32 bytes each.
fn parse_chunk_list(list: &[u8], record: &PartRecord) -> Result<Vec<Id>, RepoError> {
    if !list.len().is_multiple_of(32) {
        return Err(RepoError::Corrupt {
            object: format!("chunk list of {}", record.part),
            reason: format!("{} bytes is not a whole number of ids", list.len()),
        });
    }
    Ok(list
        .chunks_exact(32)
        .map(|id| Id::from_slice(id).expect("32 bytes"))
        .collect())
}

/// The content chunks of a listed stream, read on a blocking thread.
fn listed_chunks(repo: &Repository, record: &PartRecord) -> Result<Vec<Id>, RepoError> {
    let mut list = Vec::new();
    ChunkStreamReader::new(repo, &record.chunks)
        .read_to_end(&mut list)
        .map_err(|e| match e.downcast::<RepoError>() {
            Ok(repo_error) => repo_error,
            Err(e) => RepoError::io("chunk list", e),
        })?;
    parse_chunk_list(&list, record)
}

/// Calls `visit` with every chunk a backup needs, part by part: a stream's chunks (and
/// for a listed stream, those its list names), a tree's own chunks and the chunks of
/// every file in it (blocking: reads the trees and the lists).
pub fn for_each_chunk(
    repo: &Repository,
    manifest: &Manifest,
    mut visit: impl FnMut(&str, Id) -> Result<(), RepoError>,
) -> Result<(), RepoError> {
    for part in &manifest.parts {
        for id in &part.chunks {
            visit(&part.part, *id)?;
        }
        if part.listed {
            for id in listed_chunks(repo, part).map_err(|e| e.in_part(&part.part))? {
                visit(&part.part, id)?;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_list_is_whole_ids() {
        let record = PartRecord {
            part: "database:app".into(),
            layout: PartLayout::Stream,
            format: "sqlite".into(),
            size: 0,
            stored: 0,
            entries: 0,
            keys: None,
            listed: true,
            file: None,
            duration_ms: None,
            chunks: Vec::new(),
        };
        let ids = parse_chunk_list(&[7u8; 64], &record).unwrap();
        assert_eq!(ids, [Id([7; 32]), Id([7; 32])]);
        let error = parse_chunk_list(&[7u8; 65], &record).unwrap_err();
        assert_eq!(
            error.to_string(),
            "object chunk list of database:app: 65 bytes is not a whole number of ids"
        );
    }
}
