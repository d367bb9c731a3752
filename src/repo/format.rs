//! The repository config object (`<host>/config`): plain JSON, written once at init.
//!
//! It fixes what every later write must agree on: the format version, the chunker
//! parameters (they decide cut points, hence deduplication), the pack size, the zstd
//! level, and, for an encrypted repository, the cipher and the key check value.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::chunker::ChunkerParams;

/// The repository format this code reads and writes.
pub const REPO_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub format: u32,
    /// Random id of this repository, for messages and for telling repositories apart.
    pub id: String,
    pub created: DateTime<Utc>,
    pub chunker: ChunkerParams,
    /// Packs are closed and uploaded once they reach this many bytes.
    pub pack_size: u32,
    /// zstd level for new chunks (1 = fastest, 19 = smallest).
    pub compression: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    pub cipher: String,
    /// Derived from the key (see `crypto.rs`): recognises the right key, reveals nothing.
    pub key_check: String,
}

pub const CIPHER: &str = "xchacha20-poly1305";
pub const DEFAULT_PACK_SIZE: u32 = 16 << 20;
/// zstd's fastest level. On the churn data set (`benches/churn.sh`) level 3 made a
/// first backup 15-20% slower for a store 4% smaller; compression is most of a first
/// backup's CPU. The level is a repository's, fixed when it is created.
pub const DEFAULT_COMPRESSION: i32 = 1;

impl RepoConfig {
    /// Checks values that would make the engine misbehave if a config were hostile.
    pub fn validate(&self) -> Result<(), String> {
        if !self.chunker.is_valid() {
            return Err(format!(
                "chunker parameters {:?} are out of range",
                self.chunker
            ));
        }
        if !(1 << 20..=512 << 20).contains(&self.pack_size) {
            return Err(format!(
                "pack size {} is out of range (1 MiB to 512 MiB)",
                self.pack_size
            ));
        }
        if !(1..=19).contains(&self.compression) {
            return Err(format!(
                "compression level {} is out of range (1 to 19)",
                self.compression
            ));
        }
        if let Some(enc) = &self.encryption
            && enc.cipher != CIPHER
        {
            return Err(format!(
                "cipher {:?} is not supported (only {CIPHER})",
                enc.cipher
            ));
        }
        Ok(())
    }
}
