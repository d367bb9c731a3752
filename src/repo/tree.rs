//! Trees: the serialized form of a directory (a tree part).
//!
//! A tree is a flat stream of entries in depth-first order, children sorted by the
//! bytes of their names, the root (empty path) first. Each record is a u32 LE length
//! followed by the entry in CBOR. The stream is chunked and stored like any data, so a
//! tree of millions of entries costs little memory to write or read, and two trees can
//! be walked side by side in one pass ([`path_order`] is the order of the stream).
//!
//! Paths are relative, components joined by `/`, and kept as bytes: names need not be
//! UTF-8. Everything read from a tree is checked by [`Entry::validate`] before use, so
//! a hostile tree cannot name `..`, absolute paths or empty components.

use std::cmp::Ordering;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use super::id::Id;

/// Refuse records larger than this: a real entry (with xattrs and a huge file's chunk
/// list) stays far below it.
const MAX_RECORD_LEN: u32 = 64 << 20;
/// Room reserved for a record before its bytes arrive: most records are far smaller.
const RECORD_PREALLOCATION: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    /// Another name for the file at `target` (an earlier entry of the same tree).
    Hardlink,
    Fifo,
}

/// One chunk of a file's content, at `offset` in the file. Gaps between chunks are holes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChunk {
    pub id: Id,
    pub offset: u64,
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (no file type bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Modification time, nanoseconds since the epoch.
    pub mtime: i64,
    /// Change time and inode: only for recognising unchanged files next time.
    pub ctime: i64,
    pub inode: u64,
    /// Apparent size of a file (holes included).
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// Symlink target, or the path of the entry a hard link shares its file with.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub target: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<FileChunk>,
}

impl Entry {
    /// Bytes of content actually stored (holes excluded).
    pub fn data_len(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.len)).sum()
    }

    /// Refuses entries a hostile or corrupt tree could use to escape the target.
    pub fn validate(&self) -> Result<(), String> {
        if !self.path.is_empty() && !is_clean_relative(&self.path) {
            return Err(format!(
                "unsafe path {:?}",
                String::from_utf8_lossy(&self.path)
            ));
        }
        let needs_target = matches!(self.kind, EntryKind::Symlink | EntryKind::Hardlink);
        if needs_target != self.target.is_some() {
            return Err(format!(
                "entry {:?} has a misplaced link target",
                String::from_utf8_lossy(&self.path)
            ));
        }
        if self.kind == EntryKind::Hardlink
            && !self.target.as_deref().is_some_and(is_clean_relative)
        {
            return Err("hard link target outside the tree".into());
        }
        let mut end = 0u64;
        for c in &self.chunks {
            if c.offset < end
                || c.offset
                    .checked_add(u64::from(c.len))
                    .is_none_or(|e| e > self.size)
            {
                return Err(format!(
                    "entry {:?} has chunks out of order or past its size",
                    String::from_utf8_lossy(&self.path)
                ));
            }
            end = c.offset + u64::from(c.len);
        }
        if self.kind != EntryKind::File && !self.chunks.is_empty() {
            return Err("only files have content".into());
        }
        Ok(())
    }
}

/// A relative path with no empty, `.` or `..` components.
pub fn is_clean_relative(path: &[u8]) -> bool {
    !path.is_empty()
        && path
            .split(|b| *b == b'/')
            .all(|c| !c.is_empty() && c != b"." && c != b"..")
}

/// The order of entries in a tree stream: by path components, byte-wise.
pub fn path_order(a: &[u8], b: &[u8]) -> Ordering {
    // The root's single empty component sorts before every real name.
    a.split(|c| *c == b'/').cmp(b.split(|c| *c == b'/'))
}

/// `parent/name` in tree path form.
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        return name.to_vec();
    }
    let mut path = Vec::with_capacity(parent.len() + 1 + name.len());
    path.extend_from_slice(parent);
    path.push(b'/');
    path.extend_from_slice(name);
    path
}

pub fn write_entry<W: Write>(out: &mut W, entry: &Entry) -> io::Result<()> {
    let mut record = Vec::with_capacity(256);
    ciborium::into_writer(entry, &mut record).map_err(|e| io::Error::other(e.to_string()))?;
    out.write_all(&(record.len() as u32).to_le_bytes())?;
    out.write_all(&record)
}

/// Reads the next entry; `Ok(None)` at a clean end of the stream.
pub fn read_entry<R: Read>(input: &mut R) -> io::Result<Option<Entry>> {
    let mut len = [0u8; 4];
    // Only an end before a record's first byte is a clean end; one inside its length
    // is a cut-off stream.
    loop {
        match input.read(&mut len[..1]) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    input.read_exact(&mut len[1..])?;
    let len = u32::from_le_bytes(len);
    if len > MAX_RECORD_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("tree record of {len} bytes"),
        ));
    }
    // The buffer grows with the bytes that come, not with the length claimed: a few
    // hostile bytes must not reserve 64 MiB (found by the `tree` fuzz target).
    let mut record = Vec::with_capacity((len as usize).min(RECORD_PREALLOCATION));
    input.take(u64::from(len)).read_to_end(&mut record)?;
    if record.len() != len as usize {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("tree record cut short: {} of {len} bytes", record.len()),
        ));
    }
    let entry: Entry = ciborium::from_reader(&record[..])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("tree record: {e}")))?;
    entry
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_depth_first_with_sorted_children() {
        let mut paths: Vec<&[u8]> = vec![b"b", b"a/z", b"a", b"", b"a-b", b"a/b/c", b"a/b"];
        paths.sort_by(|a, b| path_order(a, b));
        let expected: Vec<&[u8]> = vec![b"", b"a", b"a/b", b"a/b/c", b"a/z", b"a-b", b"b"];
        assert_eq!(paths, expected);
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [&b"/etc"[..], b"../x", b"a/../b", b"a//b", b"./a", b"a/"] {
            assert!(
                !is_clean_relative(bad),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(is_clean_relative(b"a/b\xff/c"));
    }
}
