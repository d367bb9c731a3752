//! Manifests: one per completed backup, written last (the commit point).
//!
//! A manifest is sealed JSON at `manifests/<env>/<backup id>`. It names the backup
//! (name, version, trigger, user, times, expiry) and lists its parts with the chunk ids
//! of their content (stream parts) or of their serialized tree (tree parts). Its
//! presence means every object it needs was durable before it was written.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use super::crypto::Keys;
use super::id::Id;
use super::pack::DecodeError;

/// The manifest format this code writes; readers refuse newer ones.
pub const MANIFEST_FORMAT: u32 = 1;

/// How a part's data is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartLayout {
    /// A directory: `chunks` hold the serialized tree (see `tree.rs`).
    Tree,
    /// A byte stream (a database dump): `chunks` hold the bytes in order.
    Stream,
}

/// One part of a backup as recorded in its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// The part's name, e.g. `code`, `files:uploads`, `database:main`.
    pub part: String,
    pub layout: PartLayout,
    /// What produced a stream (e.g. `sqlite`, `postgres-custom`); empty for trees.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub format: String,
    /// Logical bytes (file contents, holes excluded, or stream length).
    pub size: u64,
    /// Bytes newly written to the store for this part.
    pub stored: u64,
    /// Entries in a tree part.
    #[serde(default)]
    pub entries: u64,
    /// Redis: keys in the server when it was dumped (a restore drill compares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    pub chunks: Vec<Id>,
}

/// What the caller says about a backup; the engine adds ids, times and parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMeta {
    pub env: String,
    pub name: String,
    pub version: String,
    pub trigger: String,
    pub user: String,
    pub expires: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The backup's id: the last component of its manifest key, unique and immutable.
    pub id: String,
    pub host: String,
    #[serde(flatten)]
    pub meta: BackupMeta,
    pub created: DateTime<Utc>,
    pub completed: DateTime<Utc>,
    pub parts: Vec<PartRecord>,
}

impl Manifest {
    pub fn key(&self) -> String {
        manifest_key(&self.meta.env, &self.id)
    }

    pub fn part(&self, name: &str) -> Option<&PartRecord> {
        self.parts.iter().find(|p| p.part == name)
    }

    /// The parts an environment's parts correspond to: all but companions.
    pub fn main_parts(&self) -> impl Iterator<Item = &PartRecord> {
        self.parts.iter().filter(|p| p.companion_of().is_none())
    }

    /// The companion `what` of the part `main` (e.g. the roles of a PostgreSQL part).
    pub fn companion(&self, main: &str, what: &str) -> Option<&PartRecord> {
        self.part(&companion_name(main, what))
    }

    pub fn encode(&self, keys: &Keys) -> Vec<u8> {
        keys.seal(serde_json::to_vec_pretty(self).expect("a manifest always serializes"))
    }

    pub fn decode(keys: &Keys, sealed: &[u8]) -> Result<Self, DecodeError> {
        let plain = keys.open(sealed).map_err(|_| DecodeError::Unauthentic)?;
        let manifest: Manifest = serde_json::from_slice(&plain)
            .map_err(|e| DecodeError::Malformed(format!("manifest: {e}")))?;
        if manifest.format > MANIFEST_FORMAT {
            return Err(DecodeError::Malformed(format!(
                "manifest format {} is newer than this envsnap reads ({MANIFEST_FORMAT})",
                manifest.format
            )));
        }
        if !is_safe_name(&manifest.meta.env) || !is_safe_name(&manifest.id) {
            return Err(DecodeError::Malformed(
                "manifest names an unsafe environment or id".into(),
            ));
        }
        Ok(manifest)
    }
}

/// The name of the companion `what` of the part `main`: `database:shop/roles`. Part
/// names never contain `/` (config names cannot), so companions cannot collide.
pub fn companion_name(main: &str, what: &str) -> String {
    format!("{main}/{what}")
}

impl PartRecord {
    /// A companion part holds data that belongs to another part and is restored with
    /// it (the roles a PostgreSQL database needs): the main part's name, if this is one.
    pub fn companion_of(&self) -> Option<&str> {
        self.part.split_once('/').map(|(main, _)| main)
    }
}

pub fn manifest_key(env: &str, backup_id: &str) -> String {
    format!("manifests/{env}/{backup_id}")
}

/// A new backup id: sortable by time, unique by a random suffix.
pub fn new_backup_id(created: DateTime<Utc>) -> String {
    let mut random = [0u8; 4];
    getrandom::fill(&mut random).expect("the operating system's random source failed");
    format!(
        "{}-{}",
        created.trunc_subsecs(0).format("%Y%m%dT%H%M%SZ"),
        hex::encode(random)
    )
}

/// Names that may become one component of an object key or a file name:
/// `[A-Za-z0-9][A-Za-z0-9._-]{0,63}` (the rule for backup names in SPEC.md).
pub fn is_safe_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        assert!(is_safe_name("live"));
        assert!(is_safe_name("20261124-030000-scheduled"));
        for bad in ["", ".hidden", "a/b", "..", "x y", &"a".repeat(65)] {
            assert!(!is_safe_name(bad), "{bad:?}");
        }
        assert!(is_safe_name(&new_backup_id(Utc::now())));
    }
}
