//! What a drill loads (one database part of a backup, into a private directory) and
//! what it measures there.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::super::error::DatabaseError;
use crate::config::DatabaseKind;
use crate::repo::Repository;
use crate::repo::manifest::Manifest;

/// What a drill measured in a loaded database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseFigures {
    /// Table → exact row count (`schema.table` for PostgreSQL).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tables: BTreeMap<String, u64>,
    /// Redis: keys in all databases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// SQLite: what `PRAGMA integrity_check` said (`ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<String>,
}

/// One database part to load for a drill.
pub struct ScratchSpec<'a> {
    pub repo: &'a Repository,
    pub manifest: &'a Manifest,
    /// The backup's part (`database:NAME`).
    pub part: &'a str,
    pub kind: DatabaseKind,
    /// A private directory for this part (root, 0700), empty.
    pub dir: &'a Path,
    /// The unprivileged user for PostgreSQL.
    pub run_as: &'a str,
    /// Limit for starting a server and for each query.
    pub timeout: Duration,
}

/// Table → row count from lines of `table<TAB or |>count`.
pub(super) fn parse_counts(output: &str) -> Result<BTreeMap<String, u64>, DatabaseError> {
    let mut tables = BTreeMap::new();
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        let (name, count) = line
            .rsplit_once(['\t', '|'])
            .ok_or_else(|| DatabaseError::Figures(format!("unexpected line {line:?}")))?;
        let count = count
            .trim()
            .parse()
            .map_err(|_| DatabaseError::Figures(format!("unexpected count in {line:?}")))?;
        tables.insert(name.trim().to_owned(), count);
    }
    Ok(tables)
}
