//! Keys and sealing: optional authenticated encryption of everything written.
//!
//! A key file holds at least 32 bytes of secret (any bytes; `head -c 32 /dev/urandom
//! | base64 > store.key` makes one). From it, BLAKE3's key derivation gives three
//! independent keys, each with a context string that must never change (it is part of
//! the repository format):
//!
//! - the data key: XChaCha20-Poly1305 with a random 24-byte nonce per object, so every
//!   blob, pack trailer, index object and manifest is sealed and authenticated;
//! - the id key: chunk ids become keyed BLAKE3 hashes, so ids reveal nothing about
//!   the content (an unkeyed hash would confirm guesses of known files);
//! - the check value, stored in the repository config so that a wrong key is a clear
//!   error at open time rather than a decryption failure later.
//!
//! Without a key file nothing is sealed and chunk ids are plain BLAKE3 hashes.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::id::Id;

// Context strings for key derivation: do not modify, they define existing repositories.
const DATA_KEY_CONTEXT: &str = "envsnap 2026-11-24 data encryption key";
const ID_KEY_CONTEXT: &str = "envsnap 2026-11-24 chunk id key";
const CHECK_CONTEXT: &str = "envsnap 2026-11-24 key check value";

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
}

/// The repository's keys; `Keys::none()` for an unencrypted repository.
#[derive(Clone)]
pub struct Keys {
    sealing: Option<Sealing>,
}

#[derive(Clone)]
struct Sealing {
    cipher: XChaCha20Poly1305,
    id_key: [u8; 32],
    check: [u8; 32],
}

/// A sealed object failed authentication: wrong key, or tampered or corrupt bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthentic;

impl Keys {
    pub fn none() -> Self {
        Keys { sealing: None }
    }

    /// Derives the keys from a secret (the contents of a key file).
    pub fn from_secret(secret: &[u8]) -> Self {
        let data_key = blake3::derive_key(DATA_KEY_CONTEXT, secret);
        Keys {
            sealing: Some(Sealing {
                cipher: XChaCha20Poly1305::new(&data_key.into()),
                id_key: blake3::derive_key(ID_KEY_CONTEXT, secret),
                check: blake3::derive_key(CHECK_CONTEXT, secret),
            }),
        }
    }

    pub fn from_key_file(path: &Path) -> Result<Self, KeyError> {
        let fail = |reason: String| KeyError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let secret = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let secret = secret.trim_ascii_end();
        if secret.len() < MIN_SECRET_LEN {
            return Err(fail(format!(
                "holds {} bytes; a key needs at least {MIN_SECRET_LEN}",
                secret.len()
            )));
        }
        Ok(Keys::from_secret(secret))
    }

    pub fn is_encrypted(&self) -> bool {
        self.sealing.is_some()
    }

    /// The value stored in the repository config to recognise this key.
    pub fn check_value(&self) -> Option<String> {
        self.sealing.as_ref().map(|s| hex::encode(s.check))
    }

    /// The id of a chunk's plain content.
    pub fn chunk_id(&self, data: &[u8]) -> Id {
        match &self.sealing {
            Some(s) => Id(*blake3::keyed_hash(&s.id_key, data).as_bytes()),
            None => Id::hash(data),
        }
    }

    /// Seals `plain` (nonce ‖ ciphertext ‖ tag); returns it unchanged without a key.
    pub fn seal(&self, plain: Vec<u8>) -> Vec<u8> {
        let Some(s) = &self.sealing else { return plain };
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the operating system's random source failed");
        let sealed = s
            .cipher
            .encrypt(&XNonce::from(nonce), plain.as_slice())
            .expect("XChaCha20-Poly1305 accepts messages of any length we write");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what [`Keys::seal`] made.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, Unauthentic> {
        let Some(s) = &self.sealing else {
            return Ok(sealed.to_vec());
        };
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(Unauthentic);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Unauthentic)?;
        s.cipher
            .decrypt(&XNonce::from(nonce), body)
            .map_err(|_| Unauthentic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_the_same_key() {
        let keys = Keys::from_secret(&[7u8; 32]);
        let sealed = keys.seal(b"secret payload".to_vec());
        assert_ne!(&sealed[NONCE_LEN..], b"secret payload");
        assert_eq!(keys.open(&sealed).unwrap(), b"secret payload");
        let other = Keys::from_secret(&[8u8; 32]);
        assert_eq!(other.open(&sealed), Err(Unauthentic));
        let mut tampered = sealed.clone();
        tampered[30] ^= 1;
        assert_eq!(keys.open(&tampered), Err(Unauthentic));
    }

    #[test]
    fn keyed_ids_differ_from_plain_ones() {
        let keys = Keys::from_secret(&[7u8; 32]);
        assert_ne!(keys.chunk_id(b"x"), Keys::none().chunk_id(b"x"));
        assert_eq!(keys.chunk_id(b"x"), keys.chunk_id(b"x"));
    }
}
