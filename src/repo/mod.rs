//! The repository: envsnap's storage engine.
//!
//! A repository lives in a store under one host's prefix:
//!
//! ```text
//! <host>/config                 repository config (format.rs)
//! <host>/packs/<xx>/<pack id>   chunks, compressed and optionally sealed (pack.rs)
//! <host>/index/<index id>       the chunks each write added (index.rs)
//! <host>/manifests/<env>/<id>   one per completed backup, written last (manifest.rs)
//! <host>/locks/<writer id>      running writers, so prune spares their packs (lock.rs)
//! <host>/drills/<env>/<id>/<n>  restore drill reports of a backup (evidence.rs)
//! <host>/status                the host's heartbeat, replaced as it goes (status.rs)
//! _fleet/retired/<host>        hosts an operator retired (status.rs)
//! ```
//!
//! Writing ([`writer`]): data is cut into chunks (FastCDC), named by BLAKE3, looked up
//! in the catalog's chunk index, and only new chunks are compressed, sealed and packed.
//! Packs are uploaded first, then the index object, then the manifest: the manifest is
//! the commit point, so a crash at any moment leaves no manifest that refers to missing
//! data, only unreferenced objects that prune reclaims.
//!
//! Reading ([`reader`], [`restorer`], [`export`]) hash-checks every chunk before use;
//! a missing or corrupt object is an error naming the part and the object.
//!
//! A restored tree can be checked against its backup entry by entry, content
//! included ([`check`], for restore drills).
//!
//! Maintenance: [`verify`] checks structure and, optionally, every byte; [`prune`]
//! deletes manifests and sweeps unreferenced data; [`rebuild`] recreates the chunk
//! index and the list of backups from the store alone. `docs/format.md` is the
//! contract for all of the above.

pub mod archiver;
pub mod check;
pub mod chunker;
pub mod crypto;
mod error;
pub mod evidence;
pub mod export;
pub mod format;
pub mod id;
pub mod immutable;
pub mod index;
pub mod lock;
pub mod manifest;
mod metadata;
pub mod pack;
pub mod phases;
mod pinned;
pub mod prune;
mod readahead;
pub mod reader;
pub mod rebuild;
pub mod restorer;
pub mod sink;
mod spans;
pub mod status;
pub mod tree;
pub mod verify;
pub mod writer;

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};

use crate::catalog::Catalog;
use crate::store::{Store, StoreError};
use chunker::ChunkerParams;
use crypto::Keys;
use format::{
    CIPHER, DEFAULT_COMPRESSION, DEFAULT_PACK_SIZE, EncryptionConfig, REPO_FORMAT, RepoConfig,
};
use manifest::{Manifest, manifest_key};

pub use error::RepoError;
pub use metadata::Owners;

const CONFIG_KEY: &str = "config";

/// Settings fixed when a repository is created.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub pack_size: u32,
    pub compression: i32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            pack_size: DEFAULT_PACK_SIZE,
            compression: DEFAULT_COMPRESSION,
        }
    }
}

/// An open repository; cheap to clone.
#[derive(Clone)]
pub struct Repository {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    host: String,
    keys: Keys,
    config: RepoConfig,
    catalog: Catalog,
    writers: lock::Writers,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Repository({:?}, host {})",
            self.inner.store, self.inner.host
        )
    }
}

pub(crate) fn pack_key(id: &id::Id) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{hex}", &hex[..2])
}

impl Repository {
    /// Creates a repository for `host` in `root`; refuses if one is there already.
    pub async fn init(
        root: &Store,
        host: &str,
        keys: &Keys,
        options: InitOptions,
    ) -> Result<(), RepoError> {
        let store = host_store(root, host)?;
        match store.get(CONFIG_KEY).await {
            Ok(_) => {
                return Err(RepoError::AlreadyExists {
                    location: format!("{store:?}"),
                });
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(other) => return Err(other.into()),
        }
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).expect("the operating system's random source failed");
        let config = RepoConfig {
            format: REPO_FORMAT,
            id: hex::encode(random),
            created: Utc::now(),
            chunker: options.chunker,
            pack_size: options.pack_size,
            compression: options.compression,
            encryption: keys.check_value().map(|key_check| EncryptionConfig {
                cipher: CIPHER.into(),
                key_check,
            }),
        };
        config.validate().map_err(RepoError::BadConfig)?;
        let json = serde_json::to_vec_pretty(&config).expect("config serializes");
        store.put(CONFIG_KEY, Bytes::from(json)).await?;
        Ok(())
    }

    /// Opens `host`'s repository in `root`, checking its format and the key.
    pub async fn open(
        root: &Store,
        host: &str,
        keys: Keys,
        catalog: Catalog,
    ) -> Result<Self, RepoError> {
        let store = host_store(root, host)?;
        let raw = match store.get(CONFIG_KEY).await {
            Ok(raw) => raw,
            Err(StoreError::NotFound { .. }) => {
                return Err(RepoError::NoRepository {
                    location: format!("{store:?}"),
                });
            }
            Err(other) => return Err(other.into()),
        };
        let config = parse_config(&raw)?;
        match (&config.encryption, keys.check_value()) {
            (None, None) => {}
            (Some(_), None) => return Err(RepoError::KeyRequired),
            (None, Some(_)) => return Err(RepoError::KeyNotExpected),
            (Some(enc), Some(check)) if enc.key_check != check => return Err(RepoError::WrongKey),
            (Some(_), Some(_)) => {}
        }
        Ok(Repository {
            inner: Arc::new(Inner {
                writers: lock::Writers::new(store.clone()),
                store,
                host: host.to_owned(),
                keys,
                config,
                catalog,
            }),
        })
    }

    /// Opens the repository, creating it first if the store has none and the
    /// catalog knows of no data (no chunk, no backup): a catalog that does, beside a store without
    /// a repository means the store is not the one it was (an unmounted disk), and a
    /// new, empty repository there would hide that.
    pub async fn open_or_init(
        root: &Store,
        host: &str,
        keys: Keys,
        catalog: Catalog,
        options: InitOptions,
    ) -> Result<Self, RepoError> {
        match Self::open(root, host, keys.clone(), catalog.clone()).await {
            Err(RepoError::NoRepository { location }) => {
                if catalog.chunk_count()? > 0 || !catalog.backup_envs()?.is_empty() {
                    return Err(RepoError::RepositoryLost { location });
                }
                Self::init(root, host, &keys, options).await?;
                Self::open(root, host, keys, catalog).await
            }
            other => other,
        }
    }

    pub fn host(&self) -> &str {
        &self.inner.host
    }

    pub fn config(&self) -> &RepoConfig {
        &self.inner.config
    }

    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub(crate) fn writers(&self) -> &lock::Writers {
        &self.inner.writers
    }

    /// Whether the store answers (reads the repository config's size).
    pub async fn check_store(&self) -> Result<(), RepoError> {
        self.store().size(CONFIG_KEY).await?;
        Ok(())
    }

    /// The repository is still in the store: its config object is there. A local
    /// store whose disk was unmounted would otherwise have its directory created
    /// again, empty, by the next write.
    pub async fn check_repository(&self) -> Result<(), RepoError> {
        match self.store().size(CONFIG_KEY).await {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound { .. }) => Err(RepoError::RepositoryLost {
                location: format!("{:?}", self.store()),
            }),
            Err(other) => Err(other.into()),
        }
    }

    /// Every manifest of this host (all environments, or one), oldest first.
    pub async fn list_manifests(&self, env: Option<&str>) -> Result<Vec<Manifest>, RepoError> {
        let dir = match env {
            Some(env) => format!("manifests/{}", checked_name(env)?),
            None => "manifests".to_owned(),
        };
        let objects = self.store().list(&dir).await?;
        let mut manifests: Vec<Manifest> = futures::stream::iter(objects)
            .map(|object| async move { self.load_manifest_key(&object.key).await })
            .buffer_unordered(self.store().concurrency())
            .try_collect()
            .await?;
        manifests.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(manifests)
    }

    pub async fn load_manifest(&self, env: &str, backup_id: &str) -> Result<Manifest, RepoError> {
        let key = manifest_key(checked_name(env)?, checked_name(backup_id)?);
        match self.load_manifest_key(&key).await {
            Err(RepoError::Store(StoreError::NotFound { .. })) => {
                Err(RepoError::NoSuchBackup(format!("{env}/{backup_id}")))
            }
            other => other,
        }
    }

    async fn load_manifest_key(&self, key: &str) -> Result<Manifest, RepoError> {
        let raw = self.store().get(key).await?;
        let manifest =
            Manifest::decode(self.keys(), &raw).map_err(|e| RepoError::corrupt(key, e))?;
        if manifest.key() != key {
            return Err(RepoError::Corrupt {
                object: key.to_owned(),
                reason: "manifest is stored under another name".into(),
            });
        }
        Ok(manifest)
    }
}

fn host_store(root: &Store, host: &str) -> Result<Store, RepoError> {
    Ok(root.scoped(checked_name(host)?))
}

pub(crate) fn checked_name(name: &str) -> Result<&str, RepoError> {
    if manifest::is_safe_name(name) {
        Ok(name)
    } else {
        Err(RepoError::BadName(name.to_owned()))
    }
}

fn parse_config(raw: &[u8]) -> Result<RepoConfig, RepoError> {
    #[derive(serde::Deserialize)]
    struct Version {
        format: u32,
    }
    let version: Version =
        serde_json::from_slice(raw).map_err(|e| RepoError::BadConfig(e.to_string()))?;
    if version.format != REPO_FORMAT {
        return Err(RepoError::UnsupportedFormat {
            found: version.format,
        });
    }
    let config: RepoConfig =
        serde_json::from_slice(raw).map_err(|e| RepoError::BadConfig(e.to_string()))?;
    config.validate().map_err(RepoError::BadConfig)?;
    Ok(config)
}
