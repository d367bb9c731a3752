//! Schema migrations, applied in order; each runs in one transaction with the bump of
//! `user_version`. Never edit a step that has shipped: add a new one.

use rusqlite::Connection;

use super::CatalogError;

const STEPS: &[&str] = &[
    // 1: the chunk index (chunk id → pack, offset, lengths).
    "CREATE TABLE packs (
         rowid INTEGER PRIMARY KEY,
         id BLOB NOT NULL UNIQUE
     );
     CREATE TABLE chunks (
         id BLOB PRIMARY KEY,
         pack INTEGER NOT NULL REFERENCES packs(rowid) ON DELETE CASCADE,
         kind INTEGER NOT NULL,
         offset INTEGER NOT NULL,
         length INTEGER NOT NULL,
         raw_length INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX chunks_by_pack ON chunks(pack);",
];

pub fn migrate(conn: &mut Connection, name: &str) -> Result<(), CatalogError> {
    let known = STEPS.len() as i64;
    let current: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if current > known {
        return Err(CatalogError::TooNew {
            path: name.to_owned(),
            found: current,
            known,
        });
    }
    for (index, step) in STEPS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
