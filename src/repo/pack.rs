//! Packs: the objects that hold chunk data.
//!
//! A pack is a run of blobs followed by a trailer that lists them, so that the chunk
//! index can always be rebuilt from the packs alone:
//!
//! ```text
//! blob 0 | blob 1 | ... | trailer (sealed) | trailer length: u32 LE | "ESNPACK1"
//! ```
//!
//! A blob is `sealed(flag ‖ payload)`: flag 0 = payload stored as is, 1 = zstd. A
//! chunk that zstd cannot shrink is stored as is. A trailer entry is 49 bytes: chunk
//! id (32) ‖ kind (1) ‖ offset (u64 LE) ‖ stored length (u32 LE) ‖ plain length
//! (u32 LE). The pack's own id is the BLAKE3 hash of all its bytes.
//!
//! Decoding never trusts the bytes: lengths are bounds-checked, decompression is capped
//! at the plain length the trailer promises, and the result must hash to the chunk id.

use super::crypto::Keys;
use super::id::Id;

// Magic and layout constants: do not modify, they define existing packs.
pub const PACK_MAGIC: &[u8; 8] = b"ESNPACK1";
const ENTRY_LEN: usize = 49;
const FOOTER_LEN: usize = 4 + PACK_MAGIC.len();
const FLAG_RAW: u8 = 0;
const FLAG_ZSTD: u8 = 1;
/// The largest chunk the chunker produces is 8 MiB; anything claiming more is hostile.
pub const MAX_CHUNK_LEN: u32 = 16 << 20;
/// The longest range read of a pack that joins several chunks (one chunk may be
/// longer): bounds memory to `store.concurrency` such reads, and spreads a pack over
/// several requests in flight.
pub const MAX_READ_SPAN: u64 = 4 << 20;

/// What a chunk holds: file or stream content, or the serialized tree of a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChunkKind {
    Data = 0,
    Tree = 1,
}

impl ChunkKind {
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(ChunkKind::Data),
            1 => Some(ChunkKind::Tree),
            _ => None,
        }
    }
}

/// Where a chunk lives inside its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub id: Id,
    pub kind: ChunkKind,
    pub offset: u64,
    pub length: u32,
    pub raw_length: u32,
}

/// Why a blob or pack could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("authentication failed (wrong key or tampered data)")]
    Unauthentic,
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("content does not match its id")]
    HashMismatch,
}

/// Compresses and seals one chunk.
pub fn encode_blob(
    keys: &Keys,
    compressor: &mut zstd::bulk::Compressor<'_>,
    plain: &[u8],
) -> Vec<u8> {
    // zstd writes its frame straight behind the flag: one buffer and no copy, where
    // `compress` allocated and a copy followed. A zeroed allocation of this size
    // is fresh memory, faulted in only where the frame is written; the room past it
    // lives until the packer has copied the blob (a few batches).
    let mut framed = vec![0u8; 1 + zstd::zstd_safe::compress_bound(plain.len())];
    let compressed = compressor
        .compress_to_buffer(plain, &mut framed[1..])
        .ok()
        .filter(|&n| n < plain.len());
    match compressed {
        Some(n) => {
            framed[0] = FLAG_ZSTD;
            framed.truncate(1 + n);
        }
        None => {
            framed.clear();
            framed.push(FLAG_RAW);
            framed.extend_from_slice(plain);
        }
    }
    keys.seal(framed)
}

/// Opens, decompresses and hash-checks one blob against the id it should have.
pub fn decode_blob(keys: &Keys, stored: &[u8], entry: &PackEntry) -> Result<Vec<u8>, DecodeError> {
    let framed = keys.open(stored).map_err(|_| DecodeError::Unauthentic)?;
    let (flag, payload) = framed
        .split_first()
        .ok_or_else(|| DecodeError::Malformed("empty blob".into()))?;
    let raw_length = entry.raw_length as usize;
    let plain = match *flag {
        FLAG_RAW => payload.to_vec(),
        FLAG_ZSTD => decompress(payload, raw_length)
            .map_err(|e| DecodeError::Malformed(format!("zstd: {e}")))?,
        other => return Err(DecodeError::Malformed(format!("unknown blob flag {other}"))),
    };
    if plain.len() != raw_length || keys.chunk_id(&plain) != entry.id {
        return Err(DecodeError::HashMismatch);
    }
    Ok(plain)
}

thread_local! {
    // A decompression context per thread: creating one per chunk costs more than
    // decompressing a small chunk.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompresses at most `capacity` bytes (more is an error: a hostile blob cannot
/// make us allocate beyond what the trailer promised).
fn decompress(payload: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        slot.as_mut()
            .expect("just set")
            .decompress(payload, capacity)
    })
}

/// Accumulates blobs into one pack.
#[derive(Default)]
pub struct PackBuilder {
    bytes: Vec<u8>,
    entries: Vec<PackEntry>,
}

/// A finished pack, ready to upload.
pub struct FinishedPack {
    pub id: Id,
    pub bytes: Vec<u8>,
    pub entries: Vec<PackEntry>,
}

impl PackBuilder {
    /// A pack built in `buffer` (emptied; a finished pack's, to spare fresh memory)
    /// with room for a full pack and its trailer, so it never grows by copying.
    pub fn in_buffer(mut buffer: Vec<u8>, pack_size: usize) -> Self {
        buffer.clear();
        buffer.reserve(pack_size + (1 << 20));
        PackBuilder {
            bytes: buffer,
            entries: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn add(&mut self, id: Id, kind: ChunkKind, raw_length: u32, blob: &[u8]) {
        self.entries.push(PackEntry {
            id,
            kind,
            offset: self.bytes.len() as u64,
            length: blob.len() as u32,
            raw_length,
        });
        self.bytes.extend_from_slice(blob);
    }

    pub fn finish(mut self, keys: &Keys) -> FinishedPack {
        let trailer = keys.seal(encode_entries(&self.entries));
        self.bytes.extend_from_slice(&trailer);
        self.bytes
            .extend_from_slice(&(trailer.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(PACK_MAGIC);
        FinishedPack {
            id: Id::hash(&self.bytes),
            bytes: self.bytes,
            entries: self.entries,
        }
    }
}

pub fn encode_entries(entries: &[PackEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in entries {
        out.extend_from_slice(&e.id.0);
        out.push(e.kind as u8);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.length.to_le_bytes());
        out.extend_from_slice(&e.raw_length.to_le_bytes());
    }
    out
}

/// Parses the entries of a trailer; every entry must lie inside `data_len` bytes.
pub fn decode_entries(bytes: &[u8], data_len: u64) -> Result<Vec<PackEntry>, DecodeError> {
    if !bytes.len().is_multiple_of(ENTRY_LEN) {
        return Err(DecodeError::Malformed(
            "trailer length is not a whole number of entries".into(),
        ));
    }
    bytes
        .chunks_exact(ENTRY_LEN)
        .map(|raw| {
            let id = Id::from_slice(&raw[..32]).expect("32 bytes");
            let kind = ChunkKind::from_byte(raw[32])
                .ok_or_else(|| DecodeError::Malformed(format!("unknown chunk kind {}", raw[32])))?;
            let offset = u64::from_le_bytes(raw[33..41].try_into().expect("8 bytes"));
            let length = u32::from_le_bytes(raw[41..45].try_into().expect("4 bytes"));
            let raw_length = u32::from_le_bytes(raw[45..49].try_into().expect("4 bytes"));
            let in_bounds = offset
                .checked_add(u64::from(length))
                .is_some_and(|end| end <= data_len);
            if !in_bounds || raw_length > MAX_CHUNK_LEN {
                return Err(DecodeError::Malformed(format!(
                    "entry for chunk {} out of bounds",
                    id.short()
                )));
            }
            Ok(PackEntry {
                id,
                kind,
                offset,
                length,
                raw_length,
            })
        })
        .collect()
}

/// The footer of a pack: how long its trailer is (read from the last bytes).
pub fn trailer_len_from_footer(footer: &[u8]) -> Result<u64, DecodeError> {
    if footer.len() != FOOTER_LEN || &footer[4..] != PACK_MAGIC {
        return Err(DecodeError::Malformed("not a pack (bad magic)".into()));
    }
    Ok(u64::from(u32::from_le_bytes(
        footer[..4].try_into().expect("4 bytes"),
    )))
}

pub const fn footer_len() -> u64 {
    FOOTER_LEN as u64
}

/// Reads the trailer of a whole pack held in memory.
pub fn parse_pack(keys: &Keys, pack: &[u8]) -> Result<Vec<PackEntry>, DecodeError> {
    let total = pack.len() as u64;
    if total < footer_len() {
        return Err(DecodeError::Malformed("pack too short".into()));
    }
    let trailer_len = trailer_len_from_footer(&pack[(total - footer_len()) as usize..])?;
    let data_len = total
        .checked_sub(footer_len() + trailer_len)
        .ok_or_else(|| DecodeError::Malformed("trailer longer than the pack".into()))?;
    let sealed = &pack[data_len as usize..(total - footer_len()) as usize];
    let plain = keys.open(sealed).map_err(|_| DecodeError::Unauthentic)?;
    decode_entries(&plain, data_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(keys: &Keys) {
        let mut compressor = zstd::bulk::Compressor::new(3).unwrap();
        let chunks: Vec<Vec<u8>> = vec![vec![0u8; 5000], b"short".to_vec(), (0..=255).collect()];
        let mut builder = PackBuilder::default();
        for c in &chunks {
            let blob = encode_blob(keys, &mut compressor, c);
            builder.add(keys.chunk_id(c), ChunkKind::Data, c.len() as u32, &blob);
        }
        let pack = builder.finish(keys);
        assert_eq!(pack.id, Id::hash(&pack.bytes));
        let entries = parse_pack(keys, &pack.bytes).unwrap();
        assert_eq!(entries, pack.entries);
        for (c, e) in chunks.iter().zip(&entries) {
            let stored = &pack.bytes[e.offset as usize..(e.offset + u64::from(e.length)) as usize];
            assert_eq!(&decode_blob(keys, stored, e).unwrap(), c);
        }
        assert!(entries[0].length < 100, "zeros compress");
    }

    #[test]
    fn packs_round_trip_plain_and_sealed() {
        round_trip(&Keys::none());
        round_trip(&Keys::from_secret(&[1u8; 32]));
    }

    #[test]
    fn a_flipped_byte_is_detected() {
        let keys = Keys::none();
        let mut compressor = zstd::bulk::Compressor::new(3).unwrap();
        let data = b"some data that is not compressible by much".to_vec();
        let mut blob = encode_blob(&keys, &mut compressor, &data);
        let entry = PackEntry {
            id: keys.chunk_id(&data),
            kind: ChunkKind::Data,
            offset: 0,
            length: blob.len() as u32,
            raw_length: data.len() as u32,
        };
        blob[5] ^= 0x40;
        assert_eq!(
            decode_blob(&keys, &blob, &entry),
            Err(DecodeError::HashMismatch)
        );
    }

    #[test]
    fn hostile_trailers_are_refused() {
        let keys = Keys::none();
        assert!(parse_pack(&keys, b"tiny").is_err());
        let mut bogus = vec![0u8; 10];
        bogus.extend_from_slice(&1000u32.to_le_bytes());
        bogus.extend_from_slice(PACK_MAGIC);
        assert!(parse_pack(&keys, &bogus).is_err());
        let entry = PackEntry {
            id: Id([0; 32]),
            kind: ChunkKind::Data,
            offset: 5,
            length: 100,
            raw_length: 1,
        };
        assert!(decode_entries(&encode_entries(&[entry]), 50).is_err());
    }
}
