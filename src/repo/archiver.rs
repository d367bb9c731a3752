//! Turning a directory into a tree part (runs on a blocking thread).
//!
//! The walk is depth-first with children sorted by name bytes: the tree stream's
//! order (see `tree.rs`). With a parent (the same part of the previous backup), a file
//! whose size, mtime, ctime and inode are unchanged reuses the parent's chunk list
//! without being read; the parent's tree is streamed alongside the walk, so this costs
//! no memory beyond one entry. Everything else is read once: data extents only (holes
//! of sparse files are skipped via SEEK_DATA/SEEK_HOLE), chunked and handed to the
//! pipeline. A file that changes while it is read is reported in the warnings.
//!
//! Hard links are kept: the second and later names of a file become `Hardlink`
//! entries naming the first. Sockets and device nodes are skipped with a warning.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::chunker::Chunker;
use super::id::Id;
use super::manifest::{PartLayout, PartRecord};
use super::pack::ChunkKind;
use super::reader::TreeEntries;
use super::sink::{ChunkSink, ProduceError};
use super::tree::{Entry, EntryKind, FileChunk, Xattr, join, path_order, write_entry};
use super::{RepoError, Repository};

/// Names at the root of a tree that belong to envsnap's restore, never to the data.
pub const STAGING_PREFIX: &str = ".envsnap-restore-";
/// The name prefix of a database file staged beside the one a restore replaces
/// (`sources/replace.rs`): never backed up, wherever it lies in a tree.
pub const REPLACE_PREFIX: &str = ".envsnap-replace-";
const MAX_WARNINGS: usize = 100;

#[derive(Debug, Clone, Default)]
pub struct TreeOptions {
    /// The same part of the previous backup: unchanged files reuse its chunks.
    pub parent: Option<PartRecord>,
    /// Glob patterns of paths (relative to the root) to leave out, e.g. `cache/**`.
    /// A directory that matches is left out with everything below it.
    pub exclude: Vec<String>,
}

pub(crate) fn exclusions(patterns: &[String]) -> Result<globset::GlobSet, RepoError> {
    let mut set = globset::GlobSetBuilder::new();
    for pattern in patterns {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| RepoError::BadConfig(format!("exclude pattern {pattern:?}: {e}")))?;
        set.add(glob);
    }
    set.build().map_err(|e| RepoError::BadConfig(e.to_string()))
}

pub(crate) struct ArchivedTree {
    pub size: u64,
    pub entries: u64,
    pub chunks: Vec<Id>,
    pub warnings: Vec<String>,
}

struct Archiver<'a> {
    sink: &'a ChunkSink,
    chunker: Chunker,
    tree_chunker: Chunker,
    tree_buffer: Vec<u8>,
    tree_chunks: Vec<Id>,
    stored: &'a Arc<AtomicU64>,
    exclude: globset::GlobSet,
    parent: Option<ParentCursor>,
    hardlinks: HashMap<(u64, u64), Vec<u8>>,
    names: OwnerNames,
    size: u64,
    entries: u64,
    warnings: Vec<String>,
}

pub(crate) fn archive(
    repo: &Repository,
    sink: &ChunkSink,
    root: &Path,
    options: TreeOptions,
    stored: &Arc<AtomicU64>,
) -> Result<ArchivedTree, RepoError> {
    let meta = std::fs::metadata(root).map_err(|e| RepoError::io(root, e))?;
    if !meta.is_dir() {
        return Err(RepoError::io(
            root,
            std::io::Error::other("not a directory"),
        ));
    }
    let parent = match options.parent {
        Some(part) if part.layout == PartLayout::Tree => {
            Some(ParentCursor::new(TreeEntries::open(repo, &part)?))
        }
        _ => None,
    };
    let params = repo.config().chunker;
    let mut archiver = Archiver {
        sink,
        chunker: Chunker::new(params),
        tree_chunker: Chunker::new(params),
        tree_buffer: Vec::new(),
        tree_chunks: Vec::new(),
        stored,
        exclude: exclusions(&options.exclude)?,
        parent,
        hardlinks: HashMap::new(),
        names: OwnerNames::default(),
        size: 0,
        entries: 0,
        warnings: Vec::new(),
    };
    archiver.walk(root, &meta)?;
    archiver.finish_tree()?;
    sink.finish()?;
    Ok(ArchivedTree {
        size: archiver.size,
        entries: archiver.entries,
        chunks: archiver.tree_chunks,
        warnings: archiver.warnings,
    })
}

impl Archiver<'_> {
    fn warn(&mut self, message: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(message);
        }
    }

    fn walk(&mut self, root: &Path, root_meta: &Metadata) -> Result<(), RepoError> {
        let root_entry = self.entry(root, Vec::new(), root_meta)?;
        self.emit(root_entry)?;
        // One frame per open directory: its path and the names not yet visited, so the
        // walk is depth first without recursion however deep the tree is.
        let mut names = self.list_dir(root)?;
        names.retain(|n| !n.as_bytes().starts_with(STAGING_PREFIX.as_bytes()));
        let mut stack = vec![Frame {
            rel: Vec::new(),
            full: root.to_path_buf(),
            names: names.into_iter(),
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(name) = frame.names.next() else {
                stack.pop();
                continue;
            };
            let full = frame.full.join(&name);
            let rel = join(&frame.rel, name.as_bytes());
            if !self.exclude.is_empty()
                && self
                    .exclude
                    .is_match(Path::new(std::ffi::OsStr::from_bytes(&rel)))
            {
                continue;
            }
            let meta = match std::fs::symlink_metadata(&full) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.warn(format!("{} vanished during the backup", full.display()));
                    continue;
                }
                Err(e) => return Err(RepoError::io(&full, e)),
            };
            let Some(entry) = self.entry_or_skip(&full, rel.clone(), &meta)? else {
                continue;
            };
            let is_dir = entry.kind == EntryKind::Dir;
            self.emit(entry)?;
            if is_dir {
                let names = self.list_dir(&full)?;
                stack.push(Frame {
                    rel,
                    full,
                    names: names.into_iter(),
                });
            }
        }
        Ok(())
    }

    /// A directory's entry names, sorted by bytes (the tree order).
    fn list_dir(&mut self, dir: &Path) -> Result<Vec<std::ffi::OsString>, RepoError> {
        if self.sink.cancel_token().is_cancelled() {
            return Err(RepoError::Cancelled);
        }
        let mut names = Vec::new();
        for item in std::fs::read_dir(dir).map_err(|e| RepoError::io(dir, e))? {
            let name = item.map_err(|e| RepoError::io(dir, e))?.file_name();
            // A restore's staged database file (one a crash left) is not data.
            if !name.as_bytes().starts_with(REPLACE_PREFIX.as_bytes()) {
                names.push(name);
            }
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        Ok(names)
    }

    fn entry_or_skip(
        &mut self,
        full: &Path,
        rel: Vec<u8>,
        meta: &Metadata,
    ) -> Result<Option<Entry>, RepoError> {
        let file_type = meta.file_type();
        if file_type.is_socket() || file_type.is_block_device() || file_type.is_char_device() {
            self.warn(format!(
                "{} skipped: sockets and device nodes are not backed up",
                full.display()
            ));
            return Ok(None);
        }
        match self.entry(full, rel, meta) {
            Ok(entry) => Ok(Some(entry)),
            Err(RepoError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                self.warn(format!("{} vanished during the backup", full.display()));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Builds the entry for one path; reads a regular file's content.
    fn entry(&mut self, full: &Path, rel: Vec<u8>, meta: &Metadata) -> Result<Entry, RepoError> {
        let file_type = meta.file_type();
        let kind = if file_type.is_dir() {
            EntryKind::Dir
        } else if file_type.is_symlink() {
            EntryKind::Symlink
        } else if file_type.is_fifo() {
            EntryKind::Fifo
        } else {
            EntryKind::File
        };
        let mut entry = entry_from_metadata(rel, kind, meta, &mut self.names);
        entry.xattrs = read_xattrs(full)?;
        match kind {
            EntryKind::Symlink => {
                let target = std::fs::read_link(full).map_err(|e| RepoError::io(full, e))?;
                entry.target = Some(target.as_os_str().as_bytes().to_vec());
                entry.size = 0;
            }
            EntryKind::File if meta.nlink() > 1 => {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.hardlinks.get(&key) {
                    entry.kind = EntryKind::Hardlink;
                    entry.target = Some(first.clone());
                    entry.size = 0;
                } else {
                    self.hardlinks.insert(key, entry.path.clone());
                    self.content(full, &mut entry)?;
                }
            }
            EntryKind::File => self.content(full, &mut entry)?,
            _ => entry.size = 0,
        }
        Ok(entry)
    }

    /// Fills a file entry's chunks: from the parent when unchanged, else by reading.
    fn content(&mut self, full: &Path, entry: &mut Entry) -> Result<(), RepoError> {
        if let Some(previous) = self
            .parent
            .as_mut()
            .and_then(|p| p.find(&entry.path))
            .transpose()?
        {
            let unchanged = previous.kind == EntryKind::File
                && previous.size == entry.size
                && previous.mtime == entry.mtime
                && previous.ctime == entry.ctime
                && previous.inode == entry.inode;
            if unchanged {
                entry.chunks = previous.chunks;
                self.size += entry.data_len();
                self.sink.skipped(entry.data_len());
                return Ok(());
            }
        }
        let file = open_for_reading(full).map_err(|e| RepoError::io(full, e))?;
        let before = file.metadata().map_err(|e| RepoError::io(full, e))?;
        let mut chunks = Vec::new();
        for (start, len) in data_extents(&file, &before).map_err(|e| RepoError::io(full, e))? {
            let mut reader = &file;
            reader
                .seek(SeekFrom::Start(start))
                .map_err(|e| RepoError::io(full, e))?;
            let mut offset = start;
            let (sink, stored) = (self.sink, self.stored);
            self.chunker
                .chunk_reader(reader.take(len), |data| {
                    let id = sink.add(ChunkKind::Data, data, stored)?;
                    chunks.push(FileChunk {
                        id,
                        offset,
                        len: data.len() as u32,
                    });
                    offset += data.len() as u64;
                    Ok::<_, ProduceError>(())
                })
                .map_err(|e| match e {
                    ProduceError::Io(e) => RepoError::io(full, e),
                    ProduceError::Repo(e) => e,
                })?;
        }
        let after = file.metadata().map_err(|e| RepoError::io(full, e))?;
        let read: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
        let extents_end = chunks.last().map_or(0, |c| c.offset + u64::from(c.len));
        if changed(&before, &after) || extents_end > before.len() {
            self.warn(format!(
                "{} changed while it was read; the backup holds the bytes as read",
                full.display()
            ));
        }
        // Keep the entry consistent with what was read: size and times as observed.
        entry.size = before.len().max(extents_end);
        entry.chunks = chunks;
        self.size += read;
        Ok(())
    }

    /// Appends an entry to the tree stream, storing every chunk of it that is complete.
    fn emit(&mut self, entry: Entry) -> Result<(), RepoError> {
        write_entry(&mut self.tree_buffer, &entry)
            .map_err(|e| RepoError::Pipeline(e.to_string()))?;
        self.entries += 1;
        self.drain_tree(false)
    }

    fn drain_tree(&mut self, last: bool) -> Result<(), RepoError> {
        let (sink, stored, chunks) = (self.sink, self.stored, &mut self.tree_chunks);
        self.tree_chunker
            .drain_chunks(&mut self.tree_buffer, last, |data| {
                chunks.push(sink.add(ChunkKind::Tree, data, stored)?);
                Ok::<_, RepoError>(())
            })
    }

    fn finish_tree(&mut self) -> Result<(), RepoError> {
        self.drain_tree(true)
    }
}

struct Frame {
    rel: Vec<u8>,
    full: PathBuf,
    names: std::vec::IntoIter<std::ffi::OsString>,
}

fn nanos(seconds: i64, nanos: i64) -> i64 {
    seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
}

fn entry_from_metadata(
    path: Vec<u8>,
    kind: EntryKind,
    meta: &Metadata,
    names: &mut OwnerNames,
) -> Entry {
    Entry {
        path,
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        user: names.user(meta.uid()),
        group: names.group(meta.gid()),
        mtime: nanos(meta.mtime(), meta.mtime_nsec()),
        ctime: nanos(meta.ctime(), meta.ctime_nsec()),
        inode: meta.ino(),
        size: meta.len(),
        xattrs: Vec::new(),
        target: None,
        chunks: Vec::new(),
    }
}

fn changed(before: &Metadata, after: &Metadata) -> bool {
    before.len() != after.len()
        || (before.mtime(), before.mtime_nsec()) != (after.mtime(), after.mtime_nsec())
        || (before.ctime(), before.ctime_nsec()) != (after.ctime(), after.ctime_nsec())
}

/// Opens without following a symlink swapped in since the listing, and without
/// updating the access time where the kernel allows it (owner or root).
fn open_for_reading(path: &Path) -> std::io::Result<File> {
    let open = |flags| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path)
    };
    match open(libc::O_NOFOLLOW | libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(libc::O_NOFOLLOW),
        other => other,
    }
}

/// The (start, length) ranges of a file that hold data. A file whose blocks cover its
/// size has no holes and is one range; otherwise SEEK_DATA/SEEK_HOLE find them.
fn data_extents(file: &File, meta: &Metadata) -> std::io::Result<Vec<(u64, u64)>> {
    let size = meta.len();
    if size == 0 {
        return Ok(Vec::new());
    }
    if meta.blocks().saturating_mul(512) >= size {
        return Ok(vec![(0, size)]);
    }
    use nix::unistd::{Whence, lseek};
    let mut extents = Vec::new();
    let mut pos = 0i64;
    let end = size as i64;
    while pos < end {
        let data = match lseek(file.as_fd(), pos, Whence::SeekData) {
            Ok(offset) => offset,
            Err(nix::errno::Errno::ENXIO) => break,
            // Filesystems without hole reporting: read everything.
            Err(nix::errno::Errno::EINVAL) => return Ok(vec![(0, size)]),
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(file.as_fd(), data, Whence::SeekHole)
            .map_err(std::io::Error::from)?
            .min(end);
        if hole > data {
            extents.push((data as u64, (hole - data) as u64));
        }
        pos = hole;
    }
    Ok(extents)
}

fn read_xattrs(path: &Path) -> Result<Vec<Xattr>, RepoError> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        // Filesystems without xattrs (and symlinks on some) simply have none.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(RepoError::io(path, e)),
    };
    let mut xattrs = Vec::new();
    for name in names {
        match xattr::get(path, &name) {
            Ok(Some(value)) => xattrs.push(Xattr {
                name: name.as_bytes().to_vec(),
                value,
            }),
            Ok(None) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(RepoError::io(path, e)),
        }
    }
    xattrs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(xattrs)
}

/// User and group names by id, looked up once each.
#[derive(Default)]
struct OwnerNames {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl OwnerNames {
    fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone()
    }

    fn group(&mut self, gid: u32) -> Option<String> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            })
            .clone()
    }
}

/// The parent tree, read in step with the walk (both are in tree order).
struct ParentCursor {
    entries: TreeEntries,
    next: Option<Entry>,
    done: bool,
}

impl ParentCursor {
    fn new(entries: TreeEntries) -> Self {
        ParentCursor {
            entries,
            next: None,
            done: false,
        }
    }

    /// The parent's entry for `path`, if it has one. Paths must be asked in tree order.
    fn find(&mut self, path: &[u8]) -> Option<Result<Entry, RepoError>> {
        loop {
            if self.next.is_none() && !self.done {
                match self.entries.next() {
                    Some(Ok(entry)) => self.next = Some(entry),
                    Some(Err(e)) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                    None => self.done = true,
                }
            }
            let next = self.next.as_ref()?;
            match path_order(&next.path, path) {
                std::cmp::Ordering::Less => self.next = None,
                std::cmp::Ordering::Equal => return self.next.take().map(Ok),
                std::cmp::Ordering::Greater => return None,
            }
        }
    }
}
