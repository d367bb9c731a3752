//! The chunk index: which pack holds each chunk, for deduplication and reads.
//!
//! Invariant: a chunk is listed only once its pack and the index object naming it are
//! durable in the store, so deduplicating against the index can never make a backup
//! refer to data that is not there.
//!
//! Beside it, whether prune owes the store a sweep (`sweep_owed`, see
//! `repo/prune.rs`): set before backups are deleted, when a write fails after its
//! index object and when a restart finds interrupted jobs; cleared by a prune that
//! marked.

use rusqlite::{Connection, OptionalExtension, params};

use super::db::Catalog;
use super::error::CatalogError;
use crate::repo::id::Id;
use crate::repo::pack::{ChunkKind, PackEntry};

/// A chunk's place in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLocation {
    pub pack: Id,
    pub entry: PackEntry,
}

fn id_from_blob(blob: Vec<u8>) -> Result<Id, CatalogError> {
    Id::from_slice(&blob)
        .ok_or_else(|| CatalogError::Malformed(format!("id of {} bytes", blob.len())))
}

fn locate(conn: &Connection, id: &Id) -> Result<Option<ChunkLocation>, CatalogError> {
    let mut stmt = conn.prepare_cached(
        "SELECT packs.id, kind, offset, length, raw_length
         FROM chunks JOIN packs ON packs.rowid = chunks.pack WHERE chunks.id = ?1",
    )?;
    let row = stmt
        .query_row([&id.0[..]], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, u8>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .optional()?;
    let Some((pack, kind, offset, length, raw_length)) = row else {
        return Ok(None);
    };
    let kind = ChunkKind::from_byte(kind)
        .ok_or_else(|| CatalogError::Malformed(format!("chunk kind {kind}")))?;
    Ok(Some(ChunkLocation {
        pack: id_from_blob(pack)?,
        entry: PackEntry {
            id: *id,
            kind,
            offset: offset as u64,
            length: length as u32,
            raw_length: raw_length as u32,
        },
    }))
}

impl Catalog {
    pub fn chunk_location(&self, id: &Id) -> Result<Option<ChunkLocation>, CatalogError> {
        locate(&self.lock(), id)
    }

    /// Locates many chunks (a restore's, a tree's), in order. Lookups are batched in
    /// read transactions: SQLite then takes and checks its file lock once per batch
    /// instead of once per chunk (three system calls per chunk), and other catalog
    /// users wait at most one batch.
    pub fn chunk_locations(&self, ids: &[Id]) -> Result<Vec<Option<ChunkLocation>>, CatalogError> {
        const BATCH: usize = 4096;
        let mut found = Vec::with_capacity(ids.len());
        for batch in ids.chunks(BATCH) {
            let conn = self.lock();
            let read = conn.unchecked_transaction()?;
            for id in batch {
                found.push(locate(&read, id)?);
            }
            read.commit()?;
        }
        Ok(found)
    }

    /// Whether each of `ids` is indexed, in order, in one read transaction (as
    /// [`Self::chunk_locations`], for the pages of a database cut page by page).
    pub fn has_chunks(&self, ids: &[Id]) -> Result<Vec<bool>, CatalogError> {
        let conn = self.lock();
        let read = conn.unchecked_transaction()?;
        let mut found = Vec::with_capacity(ids.len());
        {
            let mut stmt = read.prepare_cached("SELECT 1 FROM chunks WHERE id = ?1")?;
            for id in ids {
                found.push(stmt.exists([&id.0[..]])?);
            }
        }
        read.commit()?;
        Ok(found)
    }

    pub fn has_chunk(&self, id: &Id) -> Result<bool, CatalogError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT 1 FROM chunks WHERE id = ?1")?;
        Ok(stmt.exists([&id.0[..]])?)
    }

    pub fn has_pack(&self, id: &Id) -> Result<bool, CatalogError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT 1 FROM packs WHERE id = ?1")?;
        Ok(stmt.exists([&id.0[..]])?)
    }

    /// Adds packs and their chunks in one transaction. A chunk already indexed in
    /// another pack keeps its first location.
    pub fn add_packs<'a>(
        &self,
        packs: impl IntoIterator<Item = (&'a Id, &'a [PackEntry])>,
    ) -> Result<(), CatalogError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        insert_packs(&tx, packs)?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces the whole index (after prune or a rebuild) in one transaction.
    pub fn replace_chunk_index<'a>(
        &self,
        packs: impl IntoIterator<Item = (&'a Id, &'a [PackEntry])>,
    ) -> Result<(), CatalogError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute_batch("DELETE FROM chunks; DELETE FROM packs;")?;
        insert_packs(&tx, packs)?;
        tx.commit()?;
        Ok(())
    }

    /// Whether prune owes the store a mark: it may hold data no backup references
    /// that only marking finds. Without it, a prune reclaims only what needs no
    /// mark (packs no index object names) and costs the same however many backups
    /// there are.
    pub fn sweep_owed(&self) -> Result<bool, CatalogError> {
        let conn = self.lock();
        Ok(conn
            .prepare_cached("SELECT 1 FROM sweep_owed")?
            .exists([])?)
    }

    /// Records that data no backup references may be in the store: backups are
    /// about to be deleted, or a write failed after its index object.
    pub fn owe_sweep(&self) -> Result<(), CatalogError> {
        owe_sweep(&self.lock())
    }

    /// A mark and sweep has reclaimed everything unreferenced.
    pub fn sweep_done(&self) -> Result<(), CatalogError> {
        self.lock().execute("DELETE FROM sweep_owed", [])?;
        Ok(())
    }

    pub fn chunk_count(&self) -> Result<u64, CatalogError> {
        let conn = self.lock();
        Ok(conn.query_row("SELECT count(*) FROM chunks", [], |r| r.get::<_, i64>(0))? as u64)
    }
}

pub(super) fn owe_sweep(conn: &rusqlite::Connection) -> Result<(), CatalogError> {
    conn.execute(
        "INSERT OR IGNORE INTO sweep_owed VALUES (1, ?1)",
        [super::records::time_text(chrono::Utc::now())],
    )?;
    Ok(())
}

/// Inserts packs, then their chunks in the order of their ids: the chunk table and
/// its by-pack index then fill each page once, in one pass. In the packs' order, the
/// ids fall at random across the table, and a flush of 65,536 chunks overflowed
/// SQLite's page cache: pages were spilled to the WAL and dirtied again, and a first
/// backup's 13 MB catalog wrote 310 MB of WAL.
fn insert_packs<'a>(
    tx: &rusqlite::Transaction<'_>,
    packs: impl IntoIterator<Item = (&'a Id, &'a [PackEntry])>,
) -> Result<(), CatalogError> {
    let mut add_pack = tx.prepare_cached("INSERT OR IGNORE INTO packs (id) VALUES (?1)")?;
    let mut pack_rowid = tx.prepare_cached("SELECT rowid FROM packs WHERE id = ?1")?;
    let mut chunks: Vec<(i64, &PackEntry)> = Vec::new();
    for (pack, entries) in packs {
        add_pack.execute([&pack.0[..]])?;
        let rowid: i64 = pack_rowid.query_row([&pack.0[..]], |r| r.get(0))?;
        chunks.extend(entries.iter().map(|e| (rowid, e)));
    }
    // Stable: a chunk in two packs still keeps the first one's location.
    chunks.sort_by_key(|(_, e)| e.id.0);
    let mut add_chunk = tx.prepare_cached(
        "INSERT OR IGNORE INTO chunks (id, pack, kind, offset, length, raw_length) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (rowid, e) in chunks {
        add_chunk.execute(params![
            &e.id.0[..],
            rowid,
            e.kind as u8,
            e.offset as i64,
            e.length,
            e.raw_length
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_found_in_their_pack() {
        let catalog = Catalog::in_memory().unwrap();
        let pack = Id::hash(b"pack");
        let entry = PackEntry {
            id: Id::hash(b"chunk"),
            kind: ChunkKind::Data,
            offset: 10,
            length: 20,
            raw_length: 30,
        };
        catalog.add_packs([(&pack, &[entry][..])]).unwrap();
        let found = catalog.chunk_location(&entry.id).unwrap().unwrap();
        assert_eq!(found, ChunkLocation { pack, entry });
        assert!(catalog.has_chunk(&entry.id).unwrap());
        assert!(!catalog.has_chunk(&pack).unwrap());
        catalog.replace_chunk_index([]).unwrap();
        assert_eq!(catalog.chunk_count().unwrap(), 0);
    }

    /// Chunks go in in the order of their ids, not their packs': a chunk listed by
    /// two packs still keeps the first pack's location.
    #[test]
    fn a_chunk_in_two_packs_keeps_the_first_location() {
        let catalog = Catalog::in_memory().unwrap();
        let entry = |name: &[u8], offset| PackEntry {
            id: Id::hash(name),
            kind: ChunkKind::Data,
            offset,
            length: 1,
            raw_length: 1,
        };
        let (first, second) = (Id::hash(b"first"), Id::hash(b"second"));
        let shared = entry(b"shared", 7);
        let first_entries: Vec<PackEntry> = (0..50u64)
            .map(|n| entry(&n.to_le_bytes(), n))
            .chain([shared])
            .collect();
        let second_entries = [entry(b"other", 0), entry(b"shared", 99)];
        catalog
            .add_packs([(&first, &first_entries[..]), (&second, &second_entries[..])])
            .unwrap();
        let found = catalog.chunk_location(&shared.id).unwrap().unwrap();
        assert_eq!(
            found,
            ChunkLocation {
                pack: first,
                entry: shared
            }
        );
        for e in first_entries.iter().chain(&second_entries[..1]) {
            assert!(catalog.has_chunk(&e.id).unwrap());
        }
        assert_eq!(catalog.chunk_count().unwrap(), 52);
    }

    #[test]
    fn a_sweep_is_owed_until_done() {
        let catalog = Catalog::in_memory().unwrap();
        assert!(
            catalog.sweep_owed().unwrap(),
            "a new catalog knows nothing of its store"
        );
        catalog.sweep_done().unwrap();
        assert!(!catalog.sweep_owed().unwrap());
        catalog.owe_sweep().unwrap();
        catalog.owe_sweep().unwrap();
        assert!(catalog.sweep_owed().unwrap());
        catalog.sweep_done().unwrap();
        assert!(!catalog.sweep_owed().unwrap());
    }
}
