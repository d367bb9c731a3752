//! Restoring a tree part into a directory: plan, fetch into staging, then swap in.
//!
//! 1. Plan (on a blocking thread): read the backup's tree and scan the target. A file
//!    whose type, size and mtime already match is kept (delta restore); everything else
//!    is written; paths the backup does not have are removed. The plan's figures are
//!    what `--dry-run` shows.
//! 2. Fetch: the chunks of the files to write are grouped by pack and fetched with
//!    bounded concurrency; each is hash-checked and written at its offset into a
//!    staging file inside the target (same filesystem, so the final rename is atomic).
//!    Holes are never written, so sparse files stay sparse. If any chunk is missing or
//!    corrupt the restore stops here, and the target is exactly as it was.
//! 3. Apply: remove extra paths, create directories, give staged files their owner,
//!    mode, xattrs and mtime and rename them into place, then links, then directory
//!    metadata deepest first (creating entries changes a directory's mtime).
//!
//! Owners are restored by name when the name exists on this host, else by id (as tar
//! does), and only when running as root. A staging directory left by a crash is
//! removed by the next restore.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use nix::fcntl::OFlag;
use serde::Serialize;

use super::archiver::STAGING_PREFIX;
use super::id::Id;
use super::manifest::{Manifest, PartLayout};
use super::metadata::{self, Owners};
use super::pack::{PackEntry, decode_blob};
use super::pinned::{Node, Pinned, Place, Resolver};
use super::reader::{TreeEntries, part_of};
use super::tree::{Entry, EntryKind};
use super::{RepoError, Repository, pack_key};

/// Packs fetched at once during a restore.
const PACKS_IN_FLIGHT: usize = 2;

/// What a restore will do (or did).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestorePlan {
    pub entries: u64,
    pub files_to_write: u64,
    pub files_to_keep: u64,
    pub paths_to_remove: u64,
    /// Logical bytes of the files to write.
    pub bytes_to_write: u64,
    /// Stored bytes of the distinct chunks to fetch.
    pub bytes_to_fetch: u64,
}

/// A path as found in the target before the restore.
struct Existing {
    kind: EntryKind,
    size: u64,
    mtime: i64,
    dev_ino: (u64, u64),
    target: Option<Vec<u8>>,
}

struct Work {
    entries: Vec<Entry>,
    existing: HashMap<Vec<u8>, Existing>,
    /// Indices of entries to (re)create; the rest are kept.
    create: Vec<bool>,
    remove: Vec<Vec<u8>>,
}

impl Repository {
    /// Works out what restoring `part` into `target` would do, changing nothing.
    pub async fn plan_tree_restore(
        &self,
        manifest: &Manifest,
        part: &str,
        target: &Path,
    ) -> Result<RestorePlan, RepoError> {
        self.plan_tree_restore_excluding(manifest, part, target, &[])
            .await
    }

    /// As [`Repository::plan_tree_restore`], leaving paths matching `exclude` alone.
    pub async fn plan_tree_restore_excluding(
        &self,
        manifest: &Manifest,
        part: &str,
        target: &Path,
        exclude: &[String],
    ) -> Result<RestorePlan, RepoError> {
        let (_, plan, _) = self.prepare(manifest, part, target, exclude).await?;
        Ok(plan)
    }

    /// Makes `target` equal to the tree of `part`: content, types, links and metadata.
    pub async fn restore_tree(
        &self,
        manifest: &Manifest,
        part: &str,
        target: &Path,
    ) -> Result<RestorePlan, RepoError> {
        self.restore_tree_excluding(manifest, part, target, &[])
            .await
    }

    /// As [`Repository::restore_tree`], but paths of the target matching `exclude`
    /// (the part's exclude patterns: never backed up) are neither removed nor changed.
    pub async fn restore_tree_excluding(
        &self,
        manifest: &Manifest,
        part: &str,
        target: &Path,
        exclude: &[String],
    ) -> Result<RestorePlan, RepoError> {
        // Prune must not repack or delete packs while this restore reads them.
        let _reading = self.writers().begin_read().await;
        remove_stale_stages(target);
        let (work, plan, chunks) = self.prepare(manifest, part, target, exclude).await?;
        std::fs::create_dir_all(target).map_err(|e| RepoError::io(target, e))?;
        let root = Pinned::target(target).map_err(|e| RepoError::io(target, e))?;
        let stage_name = new_stage_name();
        let stage = root
            .stage(&stage_name)
            .map_err(|e| RepoError::io(target.join(&stage_name), e))?;
        let stage = Arc::new(stage);
        let fetched = self
            .fetch_into_stage(&work, chunks, &stage)
            .await
            .map_err(|e| e.in_part(part));
        let (applied, root) = match fetched {
            Ok(()) => {
                let stage_dir = stage.clone();
                let target = target.to_path_buf();
                tokio::task::spawn_blocking(move || {
                    (apply(&work, &root, &stage_dir, &target), root)
                })
                .await
                .map_err(|e| RepoError::Pipeline(e.to_string()))?
            }
            Err(e) => (Err(e), root),
        };
        remove_stage(&root, &stage_name, &stage);
        applied.map(|()| plan)
    }

    async fn prepare(
        &self,
        manifest: &Manifest,
        part: &str,
        target: &Path,
        exclude: &[String],
    ) -> Result<(Work, RestorePlan, Vec<(Id, PackEntry)>), RepoError> {
        let record = part_of(manifest, part, PartLayout::Tree)?.clone();
        let repo = self.clone();
        let target = target.to_path_buf();
        let exclude = super::archiver::exclusions(exclude)?;
        let work =
            tokio::task::spawn_blocking(move || plan_work(&repo, &record, &target, &exclude))
                .await
                .map_err(|e| RepoError::Pipeline(e.to_string()))??;
        // Locate every distinct chunk needed, in one pass over the catalog.
        let mut needed: Vec<Id> = work
            .entries
            .iter()
            .zip(&work.create)
            .filter(|(e, create)| **create && e.kind == EntryKind::File)
            .flat_map(|(e, _)| e.chunks.iter().map(|c| c.id))
            .collect();
        needed.sort_unstable();
        needed.dedup();
        let located = self
            .catalog()
            .blocking(move |c| {
                needed
                    .into_iter()
                    .map(|id| Ok((id, c.chunk_location(&id)?)))
                    .collect::<Result<Vec<_>, crate::catalog::CatalogError>>()
            })
            .await?;
        let mut chunks = Vec::with_capacity(located.len());
        for (id, location) in located {
            let location = location
                .ok_or_else(|| RepoError::UnknownChunk { chunk: id.to_hex() }.in_part(part))?;
            chunks.push((location.pack, location.entry));
        }
        let plan = RestorePlan {
            entries: work.entries.len() as u64,
            files_to_write: count_files(&work, true),
            files_to_keep: count_files(&work, false),
            paths_to_remove: work.remove.len() as u64,
            bytes_to_write: work
                .entries
                .iter()
                .zip(&work.create)
                .filter(|(e, create)| **create && e.kind == EntryKind::File)
                .map(|(e, _)| e.data_len())
                .sum(),
            bytes_to_fetch: chunks.iter().map(|(_, e)| u64::from(e.length)).sum(),
        };
        Ok((work, plan, chunks))
    }

    /// Fetches every needed chunk once and writes it into each staged file using it.
    async fn fetch_into_stage(
        &self,
        work: &Work,
        chunks: Vec<(Id, PackEntry)>,
        stage: &Arc<Pinned>,
    ) -> Result<(), RepoError> {
        // Where each chunk goes: (staged file index, offset in the file).
        let mut targets: HashMap<Id, Vec<(usize, u64)>> = HashMap::new();
        for (index, entry) in work.entries.iter().enumerate() {
            if work.create[index] && entry.kind == EntryKind::File {
                create_staged_file(stage, index, entry.size)?;
                for c in &entry.chunks {
                    targets.entry(c.id).or_default().push((index, c.offset));
                }
            }
        }
        let mut by_pack: HashMap<Id, Vec<PackEntry>> = HashMap::new();
        for (pack, entry) in chunks {
            by_pack.entry(pack).or_default().push(entry);
        }
        let targets = Arc::new(targets);
        futures::stream::iter(by_pack)
            .map(|(pack, mut entries)| {
                entries.sort_by_key(|e| e.offset);
                self.restore_pack(pack, entries, targets.clone(), stage.clone())
            })
            .buffer_unordered(PACKS_IN_FLIGHT)
            .try_collect::<()>()
            .await
    }

    async fn restore_pack(
        &self,
        pack: Id,
        entries: Vec<PackEntry>,
        targets: Arc<HashMap<Id, Vec<(usize, u64)>>>,
        stage: Arc<Pinned>,
    ) -> Result<(), RepoError> {
        let key = pack_key(&pack);
        let start = entries.first().map_or(0, |e| e.offset);
        let end = entries
            .iter()
            .map(|e| e.offset + u64::from(e.length))
            .max()
            .unwrap_or(0);
        let wanted: u64 = entries.iter().map(|e| u64::from(e.length)).sum();
        // One read of the span when most of it is wanted; else one read per chunk.
        let spans: Vec<(u64, Vec<PackEntry>)> = if wanted * 2 >= end - start {
            vec![(start, entries)]
        } else {
            entries.into_iter().map(|e| (e.offset, vec![e])).collect()
        };
        for (span_start, span_entries) in spans {
            let span_end = span_entries
                .iter()
                .map(|e| e.offset + u64::from(e.length))
                .max()
                .unwrap_or(span_start);
            let bytes = self.store().get_range(&key, span_start..span_end).await?;
            let (keys, targets, stage, key) = (
                self.keys().clone(),
                targets.clone(),
                stage.clone(),
                key.clone(),
            );
            tokio::task::spawn_blocking(move || {
                for entry in &span_entries {
                    let from = (entry.offset - span_start) as usize;
                    let stored = &bytes[from..from + entry.length as usize];
                    let plain =
                        decode_blob(&keys, stored, entry).map_err(|e| RepoError::Corrupt {
                            object: key.clone(),
                            reason: format!("chunk {}: {e}", entry.id.short()),
                        })?;
                    for (index, offset) in targets
                        .get(&entry.id)
                        .map(Vec::as_slice)
                        .unwrap_or_default()
                    {
                        let name = staged_name(*index);
                        let io = |e: std::io::Error| RepoError::io(&name, e);
                        let file = stage.open_file(&name, OFlag::O_WRONLY).map_err(io)?;
                        file.write_all_at(&plain, *offset).map_err(io)?;
                    }
                }
                Ok::<_, RepoError>(())
            })
            .await
            .map_err(|e| RepoError::Pipeline(e.to_string()))??;
        }
        Ok(())
    }
}

fn count_files(work: &Work, created: bool) -> u64 {
    work.entries
        .iter()
        .zip(&work.create)
        .filter(|(e, create)| **create == created && e.kind == EntryKind::File)
        .count() as u64
}

fn plan_work(
    repo: &Repository,
    record: &super::manifest::PartRecord,
    target: &Path,
    exclude: &globset::GlobSet,
) -> Result<Work, RepoError> {
    let entries = TreeEntries::open(repo, record)?.collect::<Result<Vec<_>, _>>()?;
    if entries
        .first()
        .is_none_or(|e| !e.path.is_empty() || e.kind != EntryKind::Dir)
    {
        return Err(RepoError::Corrupt {
            object: format!("tree of {}", record.part),
            reason: "does not start with its root".into(),
        });
    }
    check_shape(&entries, &record.part)?;
    let by_path: HashMap<&[u8], usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (&e.path[..], i))
        .collect();
    // Excluded paths are left alone, unless the backup has them (patterns changed).
    let leave_alone = |path: &[u8]| {
        !exclude.is_empty()
            && !by_path.contains_key(path)
            && exclude.is_match(Path::new(OsStr::from_bytes(path)))
    };
    let existing = scan_target(target, &leave_alone)?;
    let mut create = vec![false; entries.len()];
    let mut remove = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let found = existing.get(&entry.path);
        create[index] = match (entry.kind, found) {
            (_, None) => true,
            (kind, Some(old))
                if kind != old.kind
                    && !(kind == EntryKind::Hardlink && old.kind == EntryKind::File) =>
            {
                remove.push(entry.path.clone());
                true
            }
            (EntryKind::File, Some(old)) => old.size != entry.size || old.mtime != entry.mtime,
            (EntryKind::Symlink, Some(old)) => old.target != entry.target,
            (EntryKind::Hardlink, Some(old)) => {
                let first = entry
                    .target
                    .as_deref()
                    .and_then(|t| by_path.get(t).copied());
                let linked = first.is_some_and(|f| {
                    !create[f]
                        && existing
                            .get(&entries[f].path)
                            .is_some_and(|o| o.dev_ino == old.dev_ino)
                });
                !linked
            }
            (EntryKind::Dir | EntryKind::Fifo, Some(_)) => false,
        };
    }
    for path in existing.keys() {
        if !by_path.contains_key(&path[..]) {
            remove.push(path.clone());
        }
    }
    // Deepest first, so a directory is empty when its turn comes.
    remove.sort_by(|a, b| b.cmp(a));
    remove.dedup();
    Ok(Work {
        entries,
        existing,
        create,
        remove,
    })
}

/// A tree a restore may trust: strictly in tree order (no duplicates), every entry
/// inside a directory entry of the tree (so nothing can be written through a symlink
/// the tree itself creates, e.g. `a -> /etc` followed by `a/passwd`), and every hard
/// link naming an earlier file.
fn check_shape(entries: &[Entry], part: &str) -> Result<(), RepoError> {
    let corrupt = |reason: String| RepoError::Corrupt {
        object: format!("tree of {part}"),
        reason,
    };
    let mut dirs: std::collections::HashSet<&[u8]> = std::collections::HashSet::from([&b""[..]]);
    let mut files: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
    for pair in entries.windows(2) {
        if super::tree::path_order(&pair[0].path, &pair[1].path) != std::cmp::Ordering::Less {
            return Err(corrupt(format!(
                "entries out of order at {:?}",
                String::from_utf8_lossy(&pair[1].path)
            )));
        }
    }
    for entry in entries.iter().skip(1) {
        let name = || String::from_utf8_lossy(&entry.path).into_owned();
        let parent = entry
            .path
            .iter()
            .rposition(|b| *b == b'/')
            .map_or(&b""[..], |at| &entry.path[..at]);
        if !dirs.contains(parent) {
            return Err(corrupt(format!(
                "entry {:?} is not inside a directory of the tree",
                name()
            )));
        }
        match entry.kind {
            EntryKind::Dir => {
                dirs.insert(&entry.path);
            }
            EntryKind::File => {
                files.insert(&entry.path);
            }
            EntryKind::Hardlink if !files.contains(entry.target.as_deref().unwrap_or_default()) => {
                return Err(corrupt(format!(
                    "hard link {:?} does not name an earlier file",
                    name()
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Every path under `target` (relative, tree form), without following symlinks.
/// Paths for which `leave_alone` holds (and everything below them) are left out.
fn scan_target(
    target: &Path,
    leave_alone: &dyn Fn(&[u8]) -> bool,
) -> Result<HashMap<Vec<u8>, Existing>, RepoError> {
    let mut found = HashMap::new();
    match std::fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(RepoError::io(
                target,
                std::io::Error::other("exists and is not a directory"),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(RepoError::io(target, e)),
    }
    let mut pending = vec![(Vec::<u8>::new(), target.to_path_buf())];
    while let Some((rel, dir)) = pending.pop() {
        for item in std::fs::read_dir(&dir).map_err(|e| RepoError::io(&dir, e))? {
            let item = item.map_err(|e| RepoError::io(&dir, e))?;
            let name = item.file_name();
            if rel.is_empty() && name.as_bytes().starts_with(STAGING_PREFIX.as_bytes()) {
                continue; // ours (a restore's staging area), never the data's
            }
            let full = item.path();
            let path = super::tree::join(&rel, name.as_bytes());
            if leave_alone(&path) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&full).map_err(|e| RepoError::io(&full, e))?;
            let file_type = meta.file_type();
            let kind = if file_type.is_dir() {
                pending.push((path.clone(), full.clone()));
                EntryKind::Dir
            } else if file_type.is_symlink() {
                EntryKind::Symlink
            } else if file_type.is_file() {
                EntryKind::File
            } else {
                EntryKind::Fifo // fifos, sockets, devices: replaced unless the backup has a fifo
            };
            let target = if kind == EntryKind::Symlink {
                Some(
                    std::fs::read_link(&full)
                        .map_err(|e| RepoError::io(&full, e))?
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            } else {
                None
            };
            let mtime = meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec());
            found.insert(
                path,
                Existing {
                    kind,
                    size: meta.len(),
                    mtime,
                    dev_ino: (meta.dev(), meta.ino()),
                    target,
                },
            );
        }
    }
    Ok(found)
}

/// Staging directories an interrupted restore left in the target.
fn remove_stale_stages(target: &Path) {
    let Ok(entries) = std::fs::read_dir(target) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .as_bytes()
            .starts_with(STAGING_PREFIX.as_bytes())
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A staging directory's name: hidden, recognisable, unpredictable.
fn new_stage_name() -> String {
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).expect("the operating system's random source failed");
    format!("{STAGING_PREFIX}{}", hex::encode(random))
}

/// Empties the stage through its pinned path, then removes it from the target.
fn remove_stage(root: &Pinned, name: &str, stage: &Pinned) {
    let path = stage.path();
    for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
        let _ = std::fs::remove_dir_all(path.join(entry.file_name()));
    }
    let _ = root.remove_dir(name);
}

/// Staged files go 1024 to a directory: one directory of a hundred thousand names
/// makes every create and rename search a huge directory.
const STAGED_PER_DIR: usize = 1024;

/// Entry `index`'s name in the stage, relative to it (`3/3172`).
fn staged_name(index: usize) -> String {
    format!("{}/{index}", index / STAGED_PER_DIR)
}

/// The staging name of entry `index`, its directory created if needed.
fn staging_slot(stage: &Pinned, index: usize) -> Result<String, RepoError> {
    let dir = (index / STAGED_PER_DIR).to_string();
    stage
        .mkdir(&dir)
        .or_else(ignore_exists)
        .map_err(|e| RepoError::io(&dir, e))?;
    Ok(staged_name(index))
}

fn create_staged_file(stage: &Pinned, index: usize, size: u64) -> Result<(), RepoError> {
    let name = staging_slot(stage, index)?;
    let io = |e: std::io::Error| RepoError::io(&name, e);
    let file = stage
        .open_file(&name, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL)
        .map_err(io)?;
    file.set_len(size).map_err(io)
}

/// Step 3: puts everything in place. Runs only once every byte is staged and checked.
/// Every target path goes through a [`Resolver`] (`pinned.rs`): none can be
/// redirected. Errors name the path under `target`, as people know it.
fn apply(work: &Work, root: &Pinned, stage: &Pinned, target: &Path) -> Result<(), RepoError> {
    let mut resolver = Resolver::new(root);
    let named = |rel: &[u8]| {
        let shown = target.join(OsStr::from_bytes(rel));
        move |e: RepoError| match e {
            RepoError::Io { source, .. } => RepoError::io(&shown, source),
            other => other,
        }
    };
    for rel in &work.remove {
        remove_path(&mut resolver, rel).map_err(named(rel))?;
    }
    let owners = Owners::new();
    // The directories this restore made, by identity: the last pass sets their
    // metadata only on those very inodes.
    let mut made: HashMap<usize, (u64, u64)> = HashMap::new();
    for (index, entry) in work.entries.iter().enumerate() {
        if let Some(identity) =
            put_in_place(&mut resolver, work, index, stage, &owners).map_err(named(&entry.path))?
        {
            made.insert(index, identity);
        }
    }
    for (index, entry) in work
        .entries
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, e)| e.kind == EntryKind::Dir)
    {
        let known = work.existing.get(&entry.path);
        let fresh = known.is_none() || entry.path.is_empty();
        let expected = made.get(&index).copied().or(known.map(|k| k.dev_ino));
        let at = place(&mut resolver, &entry.path).map_err(named(&entry.path))?;
        at.node()
            .and_then(|node| same_inode(&node, expected, entry.path.is_empty()).map(|()| node))
            .and_then(|node| metadata::set(&node, entry, &owners, fresh))
            .map_err(|e| RepoError::io(target.join(OsStr::from_bytes(&entry.path)), e))?;
    }
    Ok(())
}

/// A kept or made entry must still be the inode the restore saw or made: another
/// writer that swapped it meanwhile gets an error, never our chown or chmod.
fn same_inode(node: &Node, expected: Option<(u64, u64)>, is_root: bool) -> std::io::Result<()> {
    let stat = node.stat();
    match expected {
        Some(identity) if !is_root && identity != (stat.st_dev, stat.st_ino) => Err(
            std::io::Error::other("was replaced by another writer during the restore"),
        ),
        _ => Ok(()),
    }
}

fn place(resolver: &mut Resolver<'_>, rel: &[u8]) -> Result<Place, RepoError> {
    resolver
        .place(rel)
        .map_err(|e| RepoError::io(OsStr::from_bytes(rel), e))
}

/// Removes what the backup does not have (gone already is fine).
fn remove_path(resolver: &mut Resolver<'_>, rel: &[u8]) -> Result<(), RepoError> {
    let io = |e: std::io::Error| RepoError::io(OsStr::from_bytes(rel), e);
    let place = match resolver.place(rel) {
        Ok(place) => place,
        // Its directory went with an earlier removal.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    match place.stat().map_err(io)? {
        None => Ok(()),
        Some(stat) if stat.st_mode & libc::S_IFMT == libc::S_IFDIR => {
            // Below its pinned directory, std removes the tree without following links.
            std::fs::remove_dir_all(place.path()).map_err(io)
        }
        Some(_) => place.unlink().map_err(io),
    }
}

/// Puts entry `index` in place: created from the stage, or its metadata corrected.
fn put_in_place(
    resolver: &mut Resolver<'_>,
    work: &Work,
    index: usize,
    stage: &Pinned,
    owners: &Owners,
) -> Result<Option<(u64, u64)>, RepoError> {
    let entry = &work.entries[index];
    let at = place(resolver, &entry.path)?;
    let io = |e: std::io::Error| RepoError::io(OsStr::from_bytes(&entry.path), e);
    let create = work.create[index];
    match entry.kind {
        EntryKind::Dir => {
            if create && !entry.path.is_empty() {
                // It did not exist when planned: one there now is another writer's.
                at.mkdir(0o700).map_err(io)?;
                let stat = at
                    .stat()
                    .map_err(io)?
                    .ok_or_else(|| io(std::io::Error::other("vanished as soon as it was made")))?;
                return Ok(Some((stat.st_dev, stat.st_ino)));
            }
        }
        EntryKind::File if create => {
            let staged = staged_name(index);
            let node = stage.node(&staged).map_err(io)?;
            metadata::set(&node, entry, owners, true).map_err(io)?;
            at.rename_from(stage, &staged).map_err(io)?;
        }
        EntryKind::Symlink | EntryKind::Fifo if create => {
            let staged = staging_slot(stage, index)?;
            if entry.kind == EntryKind::Symlink {
                let link = OsStr::from_bytes(entry.target.as_deref().unwrap_or_default());
                stage.symlink(link, &staged).map_err(io)?;
            } else {
                stage.mkfifo(&staged).map_err(io)?;
            }
            let node = stage.node(&staged).map_err(io)?;
            metadata::set(&node, entry, owners, true).map_err(io)?;
            at.rename_from(stage, &staged).map_err(io)?;
        }
        EntryKind::Hardlink if create => {
            let first = place(resolver, entry.target.as_deref().unwrap_or_default())?;
            let staged = staging_slot(stage, index)?;
            first.link_to(stage, &staged).map_err(io)?;
            at.rename_from(stage, &staged).map_err(io)?;
        }
        EntryKind::Hardlink => {}
        EntryKind::File | EntryKind::Symlink | EntryKind::Fifo => {
            let node = at.node().map_err(io)?;
            let seen = work.existing.get(&entry.path).map(|e| e.dev_ino);
            same_inode(&node, seen, false).map_err(io)?;
            metadata::set(&node, entry, owners, false).map_err(io)?;
        }
    }
    Ok(None)
}

fn ignore_exists(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A kept entry swapped by another writer after the plan is refused, never
    /// chowned or chmodded.
    #[test]
    fn a_swapped_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kept"), "x").unwrap();
        let seen = std::fs::metadata(dir.path().join("kept")).unwrap();
        let seen = (seen.dev(), seen.ino());
        let root = Pinned::target(dir.path()).unwrap();
        let mut resolver = Resolver::new(&root);
        let node = resolver.place(b"kept").unwrap().node().unwrap();
        assert!(same_inode(&node, Some(seen), false).is_ok());

        // Made while the old one still exists, so it cannot reuse its inode number.
        std::fs::write(dir.path().join("other"), "y").unwrap();
        std::fs::rename(dir.path().join("other"), dir.path().join("kept")).unwrap();
        let node = resolver.place(b"kept").unwrap().node().unwrap();
        let err = same_inode(&node, Some(seen), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "was replaced by another writer during the restore"
        );
    }
}
