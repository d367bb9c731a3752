//! Checking a restored tree against its backup, entry by entry (restore drills).
//!
//! The backup's tree is read as a stream, so memory stays flat whatever its size. For
//! each entry the restored path must exist with the same type; files, directories
//! and fifos the same permission bits, owner (when running as root, which is when a
//! restore sets owners) and extended attributes; files the same size and
//! modification time, and every chunk of content read back at its offset must hash
//! to the chunk id the backup recorded; symlinks the same target; hard links the same
//! inode as the file they name. Finally the directory must hold nothing else. The
//! first difference is the error ([`RepoError::Differs`]), naming the part and path.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::crypto::Keys;
use super::manifest::{Manifest, PartLayout};
use super::metadata::Owners;
use super::reader::{TreeEntries, part_of};
use super::tree::{Entry, EntryKind};
use super::{RepoError, Repository};

/// What a check of a restored tree covered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeCheck {
    /// Entries checked (the root included).
    pub entries: u64,
    pub files: u64,
    /// Bytes of file content read back and hashed.
    pub bytes: u64,
}

impl Repository {
    /// Checks that `dir` holds exactly the tree of `part`, content included.
    pub async fn check_restored_tree(
        &self,
        manifest: &Manifest,
        part: &str,
        dir: &Path,
    ) -> Result<TreeCheck, RepoError> {
        let record = part_of(manifest, part, PartLayout::Tree)?.clone();
        let (repo, dir) = (self.clone(), dir.to_path_buf());
        tokio::task::spawn_blocking(move || {
            let mut checker = Checker {
                part: record.part.clone(),
                dir,
                keys: repo.keys().clone(),
                owners: Owners::new(),
                inodes: HashMap::new(),
                figures: TreeCheck::default(),
            };
            for entry in TreeEntries::open(&repo, &record)? {
                checker.entry(&entry?)?;
            }
            checker.nothing_else()?;
            Ok(checker.figures)
        })
        .await
        .map_err(|e| RepoError::Pipeline(e.to_string()))?
    }
}

struct Checker {
    part: String,
    dir: PathBuf,
    keys: Keys,
    owners: Owners,
    /// Files by path → (device, inode), for hard links.
    inodes: HashMap<Vec<u8>, (u64, u64)>,
    figures: TreeCheck,
}

impl Checker {
    fn differs(&self, path: &[u8], problem: impl Into<String>) -> RepoError {
        RepoError::Differs {
            part: self.part.clone(),
            path: String::from_utf8_lossy(path).into_owned(),
            problem: problem.into(),
        }
    }

    fn path(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.dir.clone()
        } else {
            self.dir.join(OsStr::from_bytes(rel))
        }
    }

    fn entry(&mut self, entry: &Entry) -> Result<(), RepoError> {
        let path = self.path(&entry.path);
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| self.differs(&entry.path, format!("cannot be read: {e}")))?;
        self.figures.entries += 1;
        let kind = kind_of(&meta);
        let expected = match entry.kind {
            EntryKind::Hardlink => EntryKind::File,
            other => other,
        };
        if kind != Some(expected) {
            return Err(self.differs(
                &entry.path,
                format!("expected a {:?}, found {}", expected, describe(kind)),
            ));
        }
        match entry.kind {
            EntryKind::Symlink => self.symlink(entry, &path),
            EntryKind::Hardlink => self.hardlink(entry, &meta),
            EntryKind::File => {
                self.metadata(entry, &path, &meta)?;
                self.inodes
                    .insert(entry.path.clone(), (meta.dev(), meta.ino()));
                self.content(entry, &path)
            }
            EntryKind::Dir | EntryKind::Fifo => self.metadata(entry, &path, &meta),
        }
    }

    fn symlink(&self, entry: &Entry, path: &Path) -> Result<(), RepoError> {
        let target = std::fs::read_link(path)
            .map_err(|e| self.differs(&entry.path, format!("cannot read the link: {e}")))?;
        if Some(target.as_os_str().as_bytes()) != entry.target.as_deref() {
            return Err(self.differs(&entry.path, "the link points elsewhere"));
        }
        Ok(())
    }

    fn hardlink(&self, entry: &Entry, meta: &std::fs::Metadata) -> Result<(), RepoError> {
        let first = entry.target.as_deref().unwrap_or_default();
        if self.inodes.get(first) != Some(&(meta.dev(), meta.ino())) {
            return Err(self.differs(
                &entry.path,
                format!("is not a hard link of {:?}", String::from_utf8_lossy(first)),
            ));
        }
        Ok(())
    }

    fn metadata(
        &self,
        entry: &Entry,
        path: &Path,
        meta: &std::fs::Metadata,
    ) -> Result<(), RepoError> {
        if meta.mode() & 0o7777 != entry.mode {
            return Err(self.differs(
                &entry.path,
                format!("mode {:o}, expected {:o}", meta.mode() & 0o7777, entry.mode),
            ));
        }
        let owner = (self.owners.uid(entry), self.owners.gid(entry));
        if self.owners.is_root && (meta.uid(), meta.gid()) != owner {
            return Err(self.differs(
                &entry.path,
                format!(
                    "owner {}:{}, expected {}:{}",
                    meta.uid(),
                    meta.gid(),
                    owner.0,
                    owner.1
                ),
            ));
        }
        for x in &entry.xattrs {
            let found = xattr::get(path, OsStr::from_bytes(&x.name)).ok().flatten();
            if found.as_deref() != Some(&x.value[..]) {
                return Err(self.differs(
                    &entry.path,
                    format!(
                        "extended attribute {} differs",
                        String::from_utf8_lossy(&x.name)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Size, modification time, and every chunk hashed back to its id.
    fn content(&mut self, entry: &Entry, path: &Path) -> Result<(), RepoError> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| RepoError::io(path, e))?;
        if meta.len() != entry.size {
            return Err(self.differs(
                &entry.path,
                format!("{} bytes, expected {}", meta.len(), entry.size),
            ));
        }
        let mtime = meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec());
        if mtime != entry.mtime {
            return Err(self.differs(&entry.path, "modification time differs"));
        }
        let file = std::fs::File::open(path).map_err(|e| RepoError::io(path, e))?;
        let mut buffer = Vec::new();
        for chunk in &entry.chunks {
            buffer.resize(chunk.len as usize, 0);
            file.read_exact_at(&mut buffer, chunk.offset)
                .map_err(|e| self.differs(&entry.path, format!("cannot be read: {e}")))?;
            if self.keys.chunk_id(&buffer) != chunk.id {
                return Err(self.differs(
                    &entry.path,
                    format!("content differs at offset {}", chunk.offset),
                ));
            }
            self.figures.bytes += u64::from(chunk.len);
        }
        self.figures.files += 1;
        Ok(())
    }

    /// The directory holds no more entries than the tree (each of which was found).
    fn nothing_else(&self) -> Result<(), RepoError> {
        let mut found = 0u64;
        let mut pending = vec![self.dir.clone()];
        while let Some(dir) = pending.pop() {
            for item in std::fs::read_dir(&dir).map_err(|e| RepoError::io(&dir, e))? {
                let item = item.map_err(|e| RepoError::io(&dir, e))?;
                found += 1;
                if item.file_type().is_ok_and(|t| t.is_dir()) {
                    pending.push(item.path());
                }
                if found >= self.figures.entries {
                    return Err(self.differs(
                        b"",
                        format!(
                            "holds more than the backup's {} entries",
                            self.figures.entries.saturating_sub(1)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn kind_of(meta: &std::fs::Metadata) -> Option<EntryKind> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        Some(EntryKind::Dir)
    } else if t.is_symlink() {
        Some(EntryKind::Symlink)
    } else if t.is_file() {
        Some(EntryKind::File)
    } else if t.is_fifo() {
        Some(EntryKind::Fifo)
    } else {
        None
    }
}

fn describe(kind: Option<EntryKind>) -> String {
    match kind {
        Some(kind) => format!("a {kind:?}"),
        None => "a device or socket".to_owned(),
    }
}
