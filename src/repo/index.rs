//! Index objects: the chunks one backup (or one prune) added, by pack.
//!
//! ```text
//! sealed( "ESNIDX01" ‖ { pack id (32) ‖ entry count (u32 LE) ‖ entries (49 bytes each) }* )
//! ```
//!
//! Entries use the pack trailer's encoding. Index objects let a host rebuild its chunk
//! index with a few reads instead of one per pack; pack trailers stay the ground truth
//! for packs no index object names.

use super::crypto::Keys;
use super::id::Id;
use super::pack::{DecodeError, PackEntry, decode_entries, encode_entries};

// Do not modify: identifies index objects of format version 1.
const INDEX_MAGIC: &[u8; 8] = b"ESNIDX01";

/// The packs (and their chunks) an index object lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexObject {
    pub packs: Vec<(Id, Vec<PackEntry>)>,
}

impl IndexObject {
    pub fn encode(&self, keys: &Keys) -> Vec<u8> {
        let mut out = INDEX_MAGIC.to_vec();
        for (pack, entries) in &self.packs {
            out.extend_from_slice(&pack.0);
            out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            out.extend_from_slice(&encode_entries(entries));
        }
        keys.seal(out)
    }

    pub fn decode(keys: &Keys, sealed: &[u8]) -> Result<Self, DecodeError> {
        let plain = keys.open(sealed).map_err(|_| DecodeError::Unauthentic)?;
        let mut rest = plain
            .strip_prefix(INDEX_MAGIC)
            .ok_or_else(|| DecodeError::Malformed("not an index object (bad magic)".into()))?;
        let mut packs = Vec::new();
        while !rest.is_empty() {
            if rest.len() < 36 {
                return Err(DecodeError::Malformed("truncated index object".into()));
            }
            let pack = Id::from_slice(&rest[..32]).expect("32 bytes");
            let count = u32::from_le_bytes(rest[32..36].try_into().expect("4 bytes")) as usize;
            let len = count
                .checked_mul(49)
                .filter(|len| *len <= rest.len() - 36)
                .ok_or_else(|| DecodeError::Malformed("truncated index object".into()))?;
            let entries = decode_entries(&rest[36..36 + len], u64::MAX)?;
            packs.push((pack, entries));
            rest = &rest[36 + len..];
        }
        Ok(IndexObject { packs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::pack::ChunkKind;

    #[test]
    fn index_objects_round_trip_and_refuse_garbage() {
        let keys = Keys::from_secret(&[3u8; 32]);
        let entry = PackEntry {
            id: Id::hash(b"c"),
            kind: ChunkKind::Tree,
            offset: 0,
            length: 9,
            raw_length: 12,
        };
        let index = IndexObject {
            packs: vec![
                (Id::hash(b"p"), vec![entry, entry]),
                (Id::hash(b"q"), vec![]),
            ],
        };
        assert_eq!(
            IndexObject::decode(&keys, &index.encode(&keys)).unwrap(),
            index
        );
        let plain = Keys::none();
        let mut bytes = index.encode(&plain);
        bytes.truncate(bytes.len() - 3);
        assert!(IndexObject::decode(&plain, &bytes).is_err());
        assert!(IndexObject::decode(&plain, b"garbage").is_err());
    }
}
