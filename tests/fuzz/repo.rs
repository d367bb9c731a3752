//! Targets for what the engine reads back from a store: manifests, trees, packs and
//! their blobs, index objects, sealed objects, the repository config, drill reports.
//!
//! A store is not trusted (a bucket others can write, a damaged disk): each decoder
//! must refuse what it cannot use, without panicking or allocating from a length it
//! has not checked. Objects that decode also re-encode to the same thing.

use envsnap::drill::report::Report;
use envsnap::repo::chunker::{Chunker, ChunkerParams};
use envsnap::repo::crypto::Keys;
use envsnap::repo::format::{REPO_FORMAT, RepoConfig};
use envsnap::repo::id::Id;
use envsnap::repo::index::IndexObject;
use envsnap::repo::manifest::Manifest;
use envsnap::repo::pack::{self, ChunkKind, MAX_CHUNK_LEN, PackEntry};
use envsnap::repo::tree;

use super::driver::{DEFAULT_ALLOCATION, DEFAULT_TIME_LIMIT, Outcome, Target};

const JSON_WORDS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"null",
    b"true",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"\"2026-12-01T00:00:00Z\"",
    b"\"format\":",
    b"\"id\":",
    b"\"parts\":",
    b"\"chunks\":",
    b"\"layout\":\"tree\"",
];

pub static MANIFEST: Target = Target {
    name: "manifest",
    run: manifest,
    dictionary: JSON_WORDS,
    max_len: 64 << 10,
    allocation: DEFAULT_ALLOCATION,
    time_limit: DEFAULT_TIME_LIMIT,
};

/// `Manifest::decode` (plain repository): a manifest that decodes re-encodes to
/// itself, and its parts' names can be used.
fn manifest(input: &[u8]) -> Outcome {
    let keys = Keys::none();
    let manifest = Manifest::decode(&keys, input).map_err(|e| e.to_string())?;
    let again = Manifest::decode(&keys, &manifest.encode(&keys)).expect("re-decodes");
    assert_eq!(again, manifest);
    let _ = manifest.key();
    let companions = manifest
        .parts
        .iter()
        .filter_map(|p| p.companion_of())
        .count();
    Ok(format!(
        "{} parts, {} main, {companions} companions",
        manifest.parts.len(),
        manifest.main_parts().count()
    ))
}

pub static TREE: Target = Target {
    name: "tree",
    run: tree_stream,
    dictionary: &[
        b"path",
        b"kind",
        b"dir",
        b"file",
        b"symlink",
        b"hardlink",
        b"fifo",
        b"mode",
        b"target",
        b"chunks",
        b"xattrs",
        b"..",
        b"/",
        b"\xff\xff\xff\xff",
        b"\x00\x00\x00\x04",
    ],
    max_len: 64 << 10,
    allocation: DEFAULT_ALLOCATION,
    time_limit: DEFAULT_TIME_LIMIT,
};

/// `tree::read_entry` over a whole stream: every entry read is valid and writes back
/// to a record that reads as the same entry, and only an empty rest is a clean end.
fn tree_stream(input: &[u8]) -> Outcome {
    let mut reader = input;
    let mut entries = 0;
    loop {
        let left = reader.len();
        let entry = match tree::read_entry(&mut reader) {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                assert_eq!(left, 0, "a stream cut inside a record read as a clean end");
                return Ok(format!("{} entries", entries.min(3)));
            }
            Err(e) => return Err(format!("after {} entries: {e}", entries.min(3))),
        };
        entry
            .validate()
            .expect("read_entry returns only valid entries");
        let mut record = Vec::new();
        tree::write_entry(&mut record, &entry).unwrap();
        let again = tree::read_entry(&mut &record[..]).unwrap();
        assert_eq!(again.as_ref(), Some(&entry));
        entries += 1;
    }
}

pub static PACK: Target = Target {
    name: "pack",
    run: pack_bytes,
    dictionary: &[
        b"ESNPACK1",
        b"\x31\x00\x00\x00",
        b"\x00\x00\x00\x01",
        b"\x28\xb5\x2f\xfd",
    ],
    max_len: 64 << 10,
    // A blob's decompression is capped at the chunk length its trailer entry
    // promises, at most 16 MiB (docs/format.md): allocated up front by zstd.
    allocation: MAX_CHUNK_LEN as usize + DEFAULT_ALLOCATION,
    time_limit: DEFAULT_TIME_LIMIT,
};

/// `pack::parse_pack` on a whole pack, then `decode_blob` on every blob it lists.
fn pack_bytes(input: &[u8]) -> Outcome {
    let keys = Keys::none();
    let entries = pack::parse_pack(&keys, input).map_err(|e| format!("trailer: {e}"))?;
    let mut decoded = 0;
    for entry in &entries {
        let end = entry.offset + u64::from(entry.length);
        let stored = &input[entry.offset as usize..end as usize];
        if pack::decode_blob(&keys, stored, entry).is_ok() {
            decoded += 1;
        }
    }
    Ok(format!(
        "{} entries, {} decoded",
        entries.len().min(3),
        decoded.min(3)
    ))
}

pub static BLOB: Target = Target {
    name: "blob",
    run: blob,
    dictionary: &[b"\x00", b"\x01", b"\x28\xb5\x2f\xfd", b"\xff\xff\xff\x00"],
    max_len: 64 << 10,
    allocation: MAX_CHUNK_LEN as usize + DEFAULT_ALLOCATION,
    time_limit: DEFAULT_TIME_LIMIT,
};

/// `pack::decode_blob` on `chunk length (u32 LE) ‖ chunk id (32) ‖ blob`, the length
/// capped as a trailer's is: a blob that decodes hashes to its id.
fn blob(input: &[u8]) -> Outcome {
    if input.len() < 36 {
        return Err("short".into());
    }
    let raw_length = u32::from_le_bytes(input[..4].try_into().unwrap()).min(MAX_CHUNK_LEN);
    let stored = &input[36..];
    let entry = PackEntry {
        id: Id::from_slice(&input[4..36]).unwrap(),
        kind: ChunkKind::Data,
        offset: 0,
        length: stored.len() as u32,
        raw_length,
    };
    let keys = Keys::none();
    let plain = pack::decode_blob(&keys, stored, &entry).map_err(|e| e.to_string())?;
    assert_eq!(keys.chunk_id(&plain), entry.id);
    Ok("decoded".into())
}

pub static INDEX: Target = Target {
    name: "index",
    run: index,
    dictionary: &[
        b"ESNIDX01",
        b"\x01\x00\x00\x00",
        b"\xff\xff\xff\xff",
        b"\x00",
    ],
    max_len: 64 << 10,
    allocation: DEFAULT_ALLOCATION,
    time_limit: DEFAULT_TIME_LIMIT,
};

/// `IndexObject::decode`: an index that decodes re-encodes to itself.
fn index(input: &[u8]) -> Outcome {
    let keys = Keys::none();
    let index = IndexObject::decode(&keys, input).map_err(|e| e.to_string())?;
    assert_eq!(
        IndexObject::decode(&keys, &index.encode(&keys)).unwrap(),
        index
    );
    Ok(format!("{} packs", index.packs.len().min(3)))
}

pub static SEALED: Target = Target {
    name: "sealed",
    run: sealed,
    dictionary: &[],
    max_len: 4 << 10,
    allocation: DEFAULT_ALLOCATION,
    time_limit: DEFAULT_TIME_LIMIT,
};

/// `Keys::open` with a key: anything but what the key sealed is refused.
fn sealed(input: &[u8]) -> Outcome {
    let keys = Keys::from_secret(SEALED_SECRET);
    let plain = keys.open(input).map_err(|_| "unauthentic".to_string())?;
    Ok(format!("opened {} bytes", plain.len().min(3)))
}

/// The key the `sealed` target's corpus was sealed with.
pub const SEALED_SECRET: &[u8] = b"envsnap fuzz corpus key, not a secret";

pub static REPO_CONFIG: Target = Target {
    name: "repo_config",
    run: repo_config,
    dictionary: JSON_WORDS,
    max_len: 8 << 10,
    allocation: DEFAULT_ALLOCATION,
    time_limit: DEFAULT_TIME_LIMIT,
};

/// The repository config as `Repository::open` reads it (format first, then the whole
/// object, then `validate`); a config that passes drives the chunker without panic.
fn repo_config(input: &[u8]) -> Outcome {
    #[derive(serde::Deserialize)]
    struct Version {
        format: u32,
    }
    let version: Version = serde_json::from_slice(input).map_err(|e| e.to_string())?;
    if version.format != REPO_FORMAT {
        return Err("unsupported format".into());
    }
    let config: RepoConfig = serde_json::from_slice(input).map_err(|e| e.to_string())?;
    config.validate()?;
    chunk_a_little(config.chunker);
    Ok("valid".into())
}

fn chunk_a_little(params: ChunkerParams) {
    let chunker = Chunker::new(params);
    let mut pending: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut total = 0;
    chunker
        .drain_chunks(&mut pending, true, |chunk| {
            total += chunk.len();
            Ok::<(), ()>(())
        })
        .unwrap();
    assert_eq!(total, 100_000);
}

pub static DRILL_REPORT: Target = Target {
    name: "drill_report",
    run: drill_report,
    dictionary: JSON_WORDS,
    max_len: 32 << 10,
    allocation: DEFAULT_ALLOCATION,
    time_limit: DEFAULT_TIME_LIMIT,
};

/// A drill report as `catalog rebuild` reads it from the store: parsed, `checked`
/// (free text made one line), turned into the catalog's record.
fn drill_report(input: &[u8]) -> Outcome {
    let report: Report = serde_json::from_slice(input).map_err(|e| e.to_string())?;
    let report = report.checked().ok_or("unsafe names")?;
    let one_line = |text: &str| envsnap::message::one_line(text) == text;
    assert!(one_line(&report.user) && one_line(&report.outcome));
    assert!(report.error.as_deref().is_none_or(one_line));
    assert!(
        report
            .parts
            .iter()
            .all(|p| one_line(&p.part) && one_line(&p.kind))
    );
    let record = report.to_record();
    Ok(format!("{} warnings", record.warnings.min(3)))
}
