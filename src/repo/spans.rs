//! Range reads of packs: which of the chunks wanted from a pack share one read.
//!
//! Chunks of a pack closer than [`MAX_GAP`] are fetched in one range read, the gap
//! read and dropped: cheaper than another round trip (a request to object storage,
//! a blocking task and a system call or three on a local disk). No read grows past
//! [`MAX_READ_SPAN`], so the memory a read holds stays bounded. Restores (`restorer.rs`)
//! and stream reads (`reader.rs`) plan their reads with it.

use bytes::Bytes;

use super::crypto::Keys;
use super::id::Id;
use super::pack::{MAX_READ_SPAN, PackEntry, decode_blob};
use super::{RepoError, Repository, pack_key};

/// Chunks of a pack at most this far apart share a read.
const MAX_GAP: u64 = 256 << 10;

/// Splits the wanted chunks of one pack into range reads: neighbours closer than
/// [`MAX_GAP`] share a read, and no read grows past [`MAX_READ_SPAN`]. A restore of a few
/// files reads only their chunks; a full restore reads packs in a few long spans.
pub(crate) fn read_spans(mut entries: Vec<PackEntry>) -> Vec<Vec<PackEntry>> {
    entries.sort_by_key(|e| e.offset);
    let mut spans: Vec<Vec<PackEntry>> = Vec::new();
    for entry in entries {
        let joins = spans.last().is_some_and(|span| {
            let start = span[0].offset;
            let end = span
                .last()
                .map_or(start, |e| e.offset + u64::from(e.length));
            entry.offset.saturating_sub(end) <= MAX_GAP
                && entry.offset + u64::from(entry.length) - start <= MAX_READ_SPAN
        });
        match spans.last_mut() {
            Some(span) if joins => span.push(entry),
            _ => spans.push(vec![entry]),
        }
    }
    spans
}

/// One span of a pack, fetched in one range read; its chunks are decoded and
/// checked one at a time (on a blocking thread: it is CPU work).
pub(crate) struct FetchedSpan {
    key: String,
    start: u64,
    bytes: Bytes,
    keys: Keys,
}

impl FetchedSpan {
    /// Fetches the bytes of `entries`, a span of `pack` from [`read_spans`].
    pub(crate) async fn fetch(
        repo: &Repository,
        pack: Id,
        entries: &[PackEntry],
    ) -> Result<Self, RepoError> {
        let key = pack_key(&pack);
        let start = entries.first().map_or(0, |e| e.offset);
        let end = (entries.iter())
            .map(|e| e.offset + u64::from(e.length))
            .max()
            .unwrap_or(start);
        let bytes = repo.store().get_range(&key, start..end).await?;
        let keys = repo.keys().clone();
        Ok(FetchedSpan {
            key,
            start,
            bytes,
            keys,
        })
    }

    /// The content of `entry`, one of the span's, checked against its id.
    pub(crate) fn decode(&self, entry: &PackEntry) -> Result<Vec<u8>, RepoError> {
        let corrupt = |reason: String| RepoError::Corrupt {
            object: self.key.clone(),
            reason: format!("chunk {}: {reason}", entry.id.short()),
        };
        let from = (entry.offset - self.start) as usize;
        let blob = (self.bytes.get(from..from + entry.length as usize))
            .ok_or_else(|| corrupt("the store returned a short range".into()))?;
        decode_blob(&self.keys, blob, entry).map_err(|e| corrupt(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::id::Id;
    use crate::repo::pack::ChunkKind;

    fn entry(offset: u64, length: u64) -> PackEntry {
        PackEntry {
            id: Id::hash(&offset.to_le_bytes()),
            kind: ChunkKind::Data,
            offset,
            length: length as u32,
            raw_length: length as u32,
        }
    }

    fn spans_of(entries: Vec<PackEntry>) -> Vec<(u64, u64)> {
        read_spans(entries)
            .iter()
            .map(|span| {
                let last = span.last().unwrap();
                (span[0].offset, last.offset + u64::from(last.length))
            })
            .collect()
    }

    #[test]
    fn near_chunks_share_a_read_far_ones_do_not() {
        let k = 1 << 10;
        // Out of order on purpose: spans follow the pack's order.
        let spans = spans_of(vec![
            entry(400 * k, 10 * k),
            entry(0, 10 * k),
            entry(110 * k, 10 * k),
            entry(2000 * k, 10 * k),
        ]);
        assert_eq!(
            spans,
            vec![(0, 120 * k), (400 * k, 410 * k), (2000 * k, 2010 * k)]
        );
    }

    #[test]
    fn a_read_grows_no_longer_than_the_span_limit() {
        let chunk = 1 << 20;
        let whole_pack: Vec<_> = (0..16).map(|i| entry(i * chunk, chunk)).collect();
        let spans = spans_of(whole_pack);
        assert_eq!(spans.len(), 4, "{spans:?}");
        assert!(spans.iter().all(|(a, b)| b - a == MAX_READ_SPAN));
        // One chunk larger than the limit is still one read.
        assert_eq!(spans_of(vec![entry(0, 6 << 20)]), vec![(0, 6 << 20)]);
    }
}
