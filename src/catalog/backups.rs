//! Backups, their parts and environments' status in the catalog.
//!
//! A backup row is inserted when its job is queued (status `creating`), which reserves
//! its name; it becomes `completed` in the same transaction that marks its job
//! succeeded, and it is deleted in the one that marks its job failed. So a backup is
//! listed as completed only once its manifest is in the store, and a failed one is not
//! listed at all.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Transaction, params};

use super::db::Catalog;
use super::error::CatalogError;
use super::records::{BackupRecord, EnvState, PartSize, parse_time, time_text};

const BACKUP_COLUMNS: &str =
    "rowid, name, env, host, status, version, trigger, created, completed, expires, user, manifest";

fn backup_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, BackupRow)> {
    Ok((
        row.get(0)?,
        BackupRow {
            name: row.get(1)?,
            env: row.get(2)?,
            host: row.get(3)?,
            status: row.get(4)?,
            version: row.get(5)?,
            trigger: row.get(6)?,
            created: row.get(7)?,
            completed: row.get(8)?,
            expires: row.get(9)?,
            user: row.get(10)?,
            manifest: row.get(11)?,
        },
    ))
}

struct BackupRow {
    name: String,
    env: String,
    host: String,
    status: String,
    version: String,
    trigger: String,
    created: String,
    completed: Option<String>,
    expires: Option<String>,
    user: String,
    manifest: Option<String>,
}

impl BackupRow {
    fn into_record(self, parts: Vec<PartSize>) -> Result<BackupRecord, CatalogError> {
        Ok(BackupRecord {
            name: self.name,
            env: self.env,
            host: self.host,
            status: self.status,
            version: self.version,
            trigger: self.trigger,
            created: parse_time(&self.created)?,
            completed: self.completed.as_deref().map(parse_time).transpose()?,
            expires: self.expires.as_deref().map(parse_time).transpose()?,
            user: self.user,
            parts,
            manifest: self.manifest,
        })
    }
}

/// A backup that is new to the catalog.
pub struct NewBackup<'a> {
    pub env: &'a str,
    pub name: &'a str,
    pub host: &'a str,
    pub trigger: &'a str,
    pub user: &'a str,
    pub job: i64,
}

impl Catalog {
    pub fn backup_name_taken(&self, env: &str, name: &str) -> Result<bool, CatalogError> {
        let conn = self.lock();
        Ok(conn
            .prepare_cached("SELECT 1 FROM backups WHERE env = ?1 AND name = ?2")?
            .exists(params![env, name])?)
    }

    pub fn list_backups(&self, env: &str) -> Result<Vec<BackupRecord>, CatalogError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {BACKUP_COLUMNS} FROM backups WHERE env = ?1 ORDER BY created, rowid"
        ))?;
        let rows = stmt
            .query_map([env], backup_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let mut parts_stmt = conn.prepare_cached(
            "SELECT parts.backup, part, size, stored FROM parts JOIN backups ON backups.rowid = parts.backup
             WHERE backups.env = ?1 ORDER BY parts.backup, part",
        )?;
        let mut parts: std::collections::HashMap<i64, Vec<PartSize>> =
            std::collections::HashMap::new();
        for row in parts_stmt.query_map([env], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                PartSize {
                    part: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                    stored: r.get::<_, i64>(3)? as u64,
                },
            ))
        })? {
            let (backup, part) = row?;
            parts.entry(backup).or_default().push(part);
        }
        rows.into_iter()
            .map(|(rowid, row)| row.into_record(parts.remove(&rowid).unwrap_or_default()))
            .collect()
    }

    pub fn get_backup(&self, env: &str, name: &str) -> Result<Option<BackupRecord>, CatalogError> {
        let conn = self.lock();
        get_backup(&conn, env, name)
    }

    /// The newest completed backup of an environment.
    pub fn last_backup(&self, env: &str) -> Result<Option<BackupRecord>, CatalogError> {
        let name: Option<String> = {
            let conn = self.lock();
            conn.query_row(
                "SELECT name FROM backups WHERE env = ?1 AND status = 'completed' ORDER BY created DESC, rowid DESC LIMIT 1",
                [env],
                |r| r.get(0),
            )
            .optional()?
        };
        match name {
            Some(name) => self.get_backup(env, &name),
            None => Ok(None),
        }
    }

    /// Sets when a backup expires (`None`: kept until deleted by hand).
    pub fn set_backup_expiry(
        &self,
        env: &str,
        name: &str,
        expires: Option<DateTime<Utc>>,
    ) -> Result<bool, CatalogError> {
        let conn = self.lock();
        let changed = conn.execute(
            "UPDATE backups SET expires = ?3 WHERE env = ?1 AND name = ?2",
            params![env, name, expires.map(time_text)],
        )?;
        Ok(changed == 1)
    }

    /// Removes a backup from the catalog; returns its manifest id, if it had one.
    pub fn remove_backup(&self, env: &str, name: &str) -> Result<Option<String>, CatalogError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let manifest = remove_backup(&tx, env, name)?;
        tx.commit()?;
        Ok(manifest)
    }

    /// Records a completed backup found in the store (catalog rebuild).
    pub fn upsert_completed_backup(&self, record: &BackupRecord) -> Result<(), CatalogError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        remove_backup(&tx, &record.env, &record.name)?;
        tx.execute(
            "INSERT INTO backups (env, name, host, status, version, trigger, user, created, completed, expires, manifest)
             VALUES (?1, ?2, ?3, 'completed', ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                record.env,
                record.name,
                record.host,
                record.version,
                record.trigger,
                record.user,
                time_text(record.created),
                record.completed.map(time_text),
                record.expires.map(time_text),
                record.manifest,
            ],
        )?;
        insert_parts(&tx, tx.last_insert_rowid(), &record.parts)?;
        tx.commit()?;
        Ok(())
    }

    pub fn env_state(&self, name: &str) -> Result<EnvState, CatalogError> {
        let conn = self.lock();
        let found = conn
            .query_row(
                "SELECT status, last_error, safety_backup FROM environments WHERE name = ?1",
                [name],
                |r| {
                    Ok(EnvState {
                        name: name.to_owned(),
                        status: r.get(0)?,
                        last_error: r.get(1)?,
                        safety_backup: r.get(2)?,
                    })
                },
            )
            .optional()?;
        Ok(found.unwrap_or(EnvState {
            name: name.to_owned(),
            status: "ready".into(),
            last_error: None,
            safety_backup: None,
        }))
    }

    pub fn set_safety_backup(&self, name: &str, backup: &str) -> Result<(), CatalogError> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO environments (name, safety_backup) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET safety_backup = excluded.safety_backup",
            params![name, backup],
        )?;
        Ok(())
    }

    pub fn set_env_status(
        &self,
        name: &str,
        status: &str,
        last_error: Option<&str>,
    ) -> Result<(), CatalogError> {
        let conn = self.lock();
        set_env_status(&conn, name, status, last_error)
    }
}

pub(super) fn set_env_status(
    conn: &rusqlite::Connection,
    name: &str,
    status: &str,
    last_error: Option<&str>,
) -> Result<(), CatalogError> {
    let last_error = last_error.map(crate::message::one_line);
    conn.execute(
        "INSERT INTO environments (name, status, last_error) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET status = excluded.status, last_error = excluded.last_error,
             changing = CASE WHEN excluded.status = 'updating' THEN changing ELSE 0 END",
        params![name, status, last_error],
    )?;
    Ok(())
}

fn get_backup(
    conn: &rusqlite::Connection,
    env: &str,
    name: &str,
) -> Result<Option<BackupRecord>, CatalogError> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {BACKUP_COLUMNS} FROM backups WHERE env = ?1 AND name = ?2"
        ))?
        .query_row(params![env, name], backup_from_row)
        .optional()?;
    let Some((rowid, row)) = found else {
        return Ok(None);
    };
    let parts = conn
        .prepare_cached("SELECT part, size, stored FROM parts WHERE backup = ?1 ORDER BY part")?
        .query_map([rowid], |r| {
            Ok(PartSize {
                part: r.get(0)?,
                size: r.get::<_, i64>(1)? as u64,
                stored: r.get::<_, i64>(2)? as u64,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    row.into_record(parts).map(Some)
}

pub(super) fn insert_creating_backup(
    tx: &Transaction<'_>,
    new: &NewBackup<'_>,
    now: DateTime<Utc>,
) -> Result<(), CatalogError> {
    tx.execute(
        "INSERT INTO backups (env, name, host, status, trigger, user, created, job) VALUES (?1, ?2, ?3, 'creating', ?4, ?5, ?6, ?7)",
        params![new.env, new.name, new.host, new.trigger, new.user, time_text(now), new.job],
    )?;
    Ok(())
}

/// What a finished backup job records.
pub struct CompletedBackup<'a> {
    pub env: &'a str,
    pub name: &'a str,
    pub manifest: &'a str,
    pub version: &'a str,
    pub created: DateTime<Utc>,
    pub completed: DateTime<Utc>,
    pub expires: Option<DateTime<Utc>>,
    pub parts: &'a [PartSize],
}

pub(super) fn complete_backup(
    tx: &Transaction<'_>,
    done: &CompletedBackup<'_>,
) -> Result<(), CatalogError> {
    let rowid: i64 = tx.query_row(
        "UPDATE backups SET status = 'completed', manifest = ?3, version = ?4, created = ?5, completed = ?6, expires = ?7
         WHERE env = ?1 AND name = ?2 RETURNING rowid",
        params![
            done.env,
            done.name,
            done.manifest,
            done.version,
            time_text(done.created),
            time_text(done.completed),
            done.expires.map(time_text)
        ],
        |r| r.get(0),
    )?;
    insert_parts(tx, rowid, done.parts)
}

fn insert_parts(tx: &Transaction<'_>, backup: i64, parts: &[PartSize]) -> Result<(), CatalogError> {
    let mut stmt = tx
        .prepare_cached("INSERT INTO parts (backup, part, size, stored) VALUES (?1, ?2, ?3, ?4)")?;
    for p in parts {
        stmt.execute(params![backup, p.part, p.size as i64, p.stored as i64])?;
    }
    Ok(())
}

pub(super) fn remove_backup(
    tx: &Transaction<'_>,
    env: &str,
    name: &str,
) -> Result<Option<String>, CatalogError> {
    let manifest: Option<Option<String>> = tx
        .query_row(
            "DELETE FROM backups WHERE env = ?1 AND name = ?2 RETURNING manifest",
            params![env, name],
            |r| r.get(0),
        )
        .optional()?;
    Ok(manifest.flatten())
}
