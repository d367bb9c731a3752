//! Manifests: one per completed backup, written last (the commit point).
//!
//! A manifest is sealed JSON at `manifests/<env>/<backup id>`. It names the backup
//! (name, version, trigger, user, times, expiry) and lists its parts with the chunk ids
//! of their content (stream parts) or of their serialized tree (tree parts). Its
//! presence means every object it needs was durable before it was written.
//!
//! A stream cut into many small chunks (a SQLite database, page by page) would make a
//! manifest grow with the database, so its part is *listed*: `chunks` name chunks
//! holding the list of its content's chunk ids (`reader::stream_chunks`). Listed
//! parts came with format 2; a manifest without one is still written as format 1,
//! which older envsnap reads.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use super::crypto::Keys;
use super::id::Id;
use super::pack::DecodeError;

/// The newest manifest format this code writes and reads; readers refuse newer ones.
pub const MANIFEST_FORMAT: u32 = 2;
/// The format of a manifest without listed parts.
const UNLISTED_FORMAT: u32 = 1;

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
    /// A stream whose `chunks` hold the list of its content's chunk ids (32 bytes
    /// each, in order), not its content.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub listed: bool,
    /// A database read from a file (SQLite's database, Redis's dump): that file's
    /// owner and mode, for a restore that finds no file to take them from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileOwner>,
    /// How long the part took to write, in milliseconds: the next backup starts its
    /// longest parts first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub chunks: Vec<Id>,
}

/// A file's owner (by number, and by name where this host knows one) and mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOwner {
    /// Permission bits as read (a restore keeps only the read and write bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
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
    /// The oldest manifest format that can describe `parts`.
    pub fn format_for(parts: &[PartRecord]) -> u32 {
        if parts.iter().any(|p| p.listed) {
            MANIFEST_FORMAT
        } else {
            UNLISTED_FORMAT
        }
    }

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
        if (manifest.parts.iter()).any(|p| p.listed && p.layout != PartLayout::Stream) {
            return Err(DecodeError::Malformed(
                "manifest lists the chunks of a tree part".into(),
            ));
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

    fn part(layout: PartLayout, listed: bool) -> PartRecord {
        PartRecord {
            part: "database:app".into(),
            layout,
            format: String::new(),
            size: 0,
            stored: 0,
            entries: 0,
            keys: None,
            listed,
            file: None,
            duration_ms: None,
            chunks: Vec::new(),
        }
    }

    fn sealed(parts: Vec<PartRecord>) -> Vec<u8> {
        let now = Utc::now();
        let meta = BackupMeta {
            env: "prod".into(),
            name: "b".into(),
            version: String::new(),
            trigger: "manual".into(),
            user: "root".into(),
            expires: None,
        };
        let manifest = Manifest {
            format: Manifest::format_for(&parts),
            id: new_backup_id(now),
            host: "h".into(),
            meta,
            created: now,
            completed: now,
            parts,
        };
        manifest.encode(&Keys::none())
    }

    #[test]
    fn only_streams_are_listed() {
        let listed_stream = sealed(vec![part(PartLayout::Stream, true)]);
        let manifest = Manifest::decode(&Keys::none(), &listed_stream).unwrap();
        assert_eq!(manifest.format, 2);
        assert!(manifest.parts[0].listed);
        let listed_tree = sealed(vec![part(PartLayout::Tree, true)]);
        let refused = Manifest::decode(&Keys::none(), &listed_tree).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("lists the chunks of a tree part")
        );
        let plain = sealed(vec![part(PartLayout::Stream, false)]);
        let plain = Manifest::decode(&Keys::none(), &plain).unwrap();
        assert_eq!(plain.format, 1);
        let text = String::from_utf8(Keys::none().open(&sealed(plain.parts)).unwrap()).unwrap();
        assert!(
            !text.contains("listed"),
            "format 1 manifests stay as they were"
        );
    }
}
