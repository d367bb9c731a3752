//! Test repositories on real stores, backups of directories, and an entry-by-entry
//! comparison of two trees (which the end-to-end tests use too).

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use envsnap::catalog::Catalog;
use envsnap::repo::archiver::TreeOptions;
use envsnap::repo::chunker::ChunkerParams;
use envsnap::repo::crypto::Keys;
use envsnap::repo::manifest::{BackupMeta, Manifest};
use envsnap::repo::{InitOptions, Repository};
use envsnap::store::Store;
use tokio_util::sync::CancellationToken;

pub const HOST: &str = "test-host";

/// Small chunks, so that modest test files span many chunks and packs.
pub fn small_options() -> InitOptions {
    InitOptions {
        chunker: ChunkerParams {
            min_size: 4096,
            avg_size: 16384,
            max_size: 65536,
        },
        pack_size: 1 << 20,
        compression: 3,
    }
}

pub fn keys(encrypted: bool) -> Keys {
    if encrypted {
        Keys::from_secret(b"0123456789abcdef0123456789abcdef-test")
    } else {
        Keys::none()
    }
}

/// Where a test repository lives.
#[derive(Debug, Clone, Copy)]
pub enum StoreKind {
    Memory,
    LocalDir,
}

pub struct TestRepo {
    pub repo: Repository,
    pub root: Store,
    pub keys: Keys,
    /// Holds the local store directory (and scratch space) for the test's duration.
    pub dir: tempfile::TempDir,
}

impl TestRepo {
    pub async fn new(kind: StoreKind, encrypted: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = match kind {
            StoreKind::Memory => Store::memory(),
            StoreKind::LocalDir => {
                Store::from_url(&format!("file://{}/store", dir.path().display())).unwrap()
            }
        };
        let keys = keys(encrypted);
        Repository::init(&root, HOST, &keys, small_options())
            .await
            .unwrap();
        let repo = Repository::open(&root, HOST, keys.clone(), Catalog::in_memory().unwrap())
            .await
            .unwrap();
        TestRepo {
            repo,
            root,
            keys,
            dir,
        }
    }

    /// The same repository opened afresh, with a new (empty, then rebuilt) catalog.
    pub async fn reopen(&self) -> Repository {
        let repo = Repository::open(
            &self.root,
            HOST,
            self.keys.clone(),
            Catalog::in_memory().unwrap(),
        )
        .await
        .unwrap();
        repo.rebuild_index().await.unwrap();
        repo
    }

    pub fn scratch(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    }
}

pub fn meta(env: &str, name: &str) -> BackupMeta {
    BackupMeta {
        env: env.into(),
        name: name.into(),
        version: "1.0".into(),
        trigger: "manual".into(),
        user: "root".into(),
        expires: None,
    }
}

/// Backs up `dir` as part `files:data` (with `parent`'s part as parent).
pub async fn backup_dir(
    repo: &Repository,
    env: &str,
    name: &str,
    dir: &Path,
    parent: Option<&Manifest>,
) -> Manifest {
    let mut writer = repo.start_backup(CancellationToken::new()).await.unwrap();
    let parent = parent.and_then(|m| m.part("files:data")).cloned();
    writer
        .add_tree(
            "files:data",
            dir.to_path_buf(),
            TreeOptions {
                parent,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    writer.commit(meta(env, name)).await.unwrap()
}

/// Everything observable about one path, for comparing trees.
#[derive(Debug, PartialEq, Eq)]
pub struct Observed {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub content: Vec<u8>,
    pub link: Option<PathBuf>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Other names of the same file (hard links), relative paths sorted.
    pub links: Vec<PathBuf>,
}

/// Walks `root` and records every entry below it (and the root's own metadata).
pub fn observe(root: &Path) -> BTreeMap<PathBuf, Observed> {
    let mut by_inode: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    let mut found = BTreeMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let full = root.join(&rel);
        let meta = std::fs::symlink_metadata(&full).unwrap();
        let ft = meta.file_type();
        let (kind, content, link) = if ft.is_dir() {
            for item in std::fs::read_dir(&full).unwrap() {
                pending.push(rel.join(item.unwrap().file_name()));
            }
            ("dir", Vec::new(), None)
        } else if ft.is_symlink() {
            (
                "symlink",
                Vec::new(),
                Some(std::fs::read_link(&full).unwrap()),
            )
        } else if ft.is_file() {
            by_inode.entry(meta.ino()).or_default().push(rel.clone());
            ("file", std::fs::read(&full).unwrap(), None)
        } else {
            ("other", Vec::new(), None)
        };
        let mut xattrs: Vec<_> = xattr::list(&full)
            .map(|names| {
                names
                    .filter_map(|n| Some((n.as_bytes().to_vec(), xattr::get(&full, &n).ok()??)))
                    .collect()
            })
            .unwrap_or_default();
        xattrs.sort();
        found.insert(
            rel,
            Observed {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                // Symlink mtimes are not portable across all tools; compare the rest.
                mtime_ns: if kind == "symlink" {
                    0
                } else {
                    meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
                },
                content,
                link,
                xattrs,
                links: Vec::new(),
            },
        );
    }
    for group in by_inode.values().filter(|g| g.len() > 1) {
        let mut sorted = group.clone();
        sorted.sort();
        for path in group {
            found.get_mut(path).unwrap().links = sorted.clone();
        }
    }
    found
}

/// Asserts two trees are equal entry by entry, naming the first difference.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let (a, b) = (observe(expected), observe(actual));
    let a_paths: Vec<_> = a.keys().collect();
    let b_paths: Vec<_> = b.keys().collect();
    assert_eq!(a_paths, b_paths, "the trees hold different paths");
    for (path, want) in &a {
        let got = &b[path];
        if want.mtime_ns != got.mtime_ns && want.kind == "dir" && path.as_os_str().is_empty() {
            continue; // the root's mtime is the target's own business
        }
        assert_eq!(want, got, "entry {:?} differs", path);
    }
}

/// Allocated bytes of a file (to check sparse files stay sparse).
pub fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Deterministic pseudo-random bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Store request settings with `retry_timeout` and the rest at their defaults.
pub fn transfer_settings(retry_timeout: std::time::Duration) -> envsnap::store::TransferSettings {
    envsnap::store::TransferSettings {
        concurrency: envsnap::store::DEFAULT_CONCURRENCY,
        retry_timeout,
        upload_limit: Default::default(),
        download_limit: Default::default(),
        timezone: chrono_tz::UTC,
    }
}
