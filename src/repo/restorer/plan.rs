//! Step 1 of a restore, the plan (on a blocking thread): read the backup's tree and
//! scan the target. A file whose type, size and mtime already match is kept (delta
//! restore); everything else is written; paths the backup does not have are removed.
//! The plan's figures are what `--dry-run` shows. Planning changes nothing, so a
//! failed plan (a damaged tree, an unreadable target, a chunk missing from the
//! index) leaves the target as it was.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

use super::walk::Walk;
use crate::repo::archiver::{self, STAGING_PREFIX};
use crate::repo::id::Id;
use crate::repo::manifest::{Manifest, PartLayout, PartRecord};
use crate::repo::pack::PackEntry;
use crate::repo::reader::{TreeEntries, part_of};
use crate::repo::tree::{self, Entry, EntryKind};
use crate::repo::{RepoError, Repository};

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
pub(super) struct Existing {
    kind: EntryKind,
    size: u64,
    mtime: i64,
    pub(super) dev_ino: (u64, u64),
    target: Option<Vec<u8>>,
}

/// The plan in full: the backup's entries and, for each, whether it is (re)created.
pub(super) struct Work {
    pub(super) entries: Vec<Entry>,
    pub(super) existing: HashMap<Vec<u8>, Existing>,
    /// Indices of entries to (re)create; the rest are kept.
    pub(super) create: Vec<bool>,
    pub(super) remove: Vec<Vec<u8>>,
}

impl Work {
    /// Entries written into an empty target: all created, nothing there before.
    pub(super) fn fresh(entries: Vec<Entry>) -> Work {
        Work {
            create: vec![true; entries.len()],
            entries,
            existing: HashMap::new(),
            remove: Vec::new(),
        }
    }
}

impl Repository {
    /// Plans restoring `part` into `target` and locates every chunk the plan needs.
    pub(super) async fn prepare(
        &self,
        manifest: &Manifest,
        part: &str,
        target: &Path,
        exclude: &[String],
    ) -> Result<(Work, RestorePlan, Vec<(Id, PackEntry)>), RepoError> {
        let record = part_of(manifest, part, PartLayout::Tree)?.clone();
        let repo = self.clone();
        let target = target.to_path_buf();
        let exclude = archiver::exclusions(exclude)?;
        let work =
            tokio::task::spawn_blocking(move || plan_work(&repo, &record, &target, &exclude))
                .await
                .map_err(|e| RepoError::Pipeline(e.to_string()))??;
        let chunks = self.locate_needed(&work, part).await?;
        let plan = RestorePlan::of(&work, &chunks);
        Ok((work, plan, chunks))
    }

    /// Locates every distinct chunk the files to write need, in batched catalog reads.
    pub(super) async fn locate_needed(
        &self,
        work: &Work,
        part: &str,
    ) -> Result<Vec<(Id, PackEntry)>, RepoError> {
        let mut needed: Vec<Id> = work
            .entries
            .iter()
            .zip(&work.create)
            .filter(|(e, create)| **create && e.kind == EntryKind::File)
            .flat_map(|(e, _)| e.chunks.iter().map(|c| c.id))
            .collect();
        needed.sort_unstable();
        needed.dedup();
        let (located, needed) = self
            .catalog()
            .blocking(move |c| Ok((c.chunk_locations(&needed)?, needed)))
            .await?;
        let mut chunks = Vec::with_capacity(located.len());
        for (id, location) in needed.into_iter().zip(located) {
            let location = location
                .ok_or_else(|| RepoError::UnknownChunk { chunk: id.to_hex() }.in_part(part))?;
            chunks.push((location.pack, location.entry));
        }
        Ok(chunks)
    }
}

impl RestorePlan {
    /// The figures of `work`, whose files need `chunks`.
    pub(super) fn of(work: &Work, chunks: &[(Id, PackEntry)]) -> RestorePlan {
        RestorePlan {
            entries: work.entries.len() as u64,
            files_to_write: count_files(work, true),
            files_to_keep: count_files(work, false),
            paths_to_remove: work.remove.len() as u64,
            bytes_to_write: work
                .entries
                .iter()
                .zip(&work.create)
                .filter(|(e, create)| **create && e.kind == EntryKind::File)
                .map(|(e, _)| e.data_len())
                .sum(),
            bytes_to_fetch: chunks.iter().map(|(_, e)| u64::from(e.length)).sum(),
        }
    }

    /// Adds the figures of another batch of the same restore.
    pub(super) fn add(&mut self, other: &RestorePlan) {
        self.entries += other.entries;
        self.files_to_write += other.files_to_write;
        self.files_to_keep += other.files_to_keep;
        self.paths_to_remove += other.paths_to_remove;
        self.bytes_to_write += other.bytes_to_write;
        self.bytes_to_fetch += other.bytes_to_fetch;
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
    record: &PartRecord,
    target: &Path,
    exclude: &globset::GlobSet,
) -> Result<Work, RepoError> {
    let entries = TreeEntries::open(repo, record)?.collect::<Result<Vec<_>, _>>()?;
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

/// A tree a restore may trust (see `walk.rs`), and every hard link naming an
/// earlier file: the whole tree is at hand here, unlike in a streamed restore.
fn check_shape(entries: &[Entry], part: &str) -> Result<(), RepoError> {
    let mut walk = Walk::new(part);
    let mut files: HashSet<&[u8]> = HashSet::new();
    for entry in entries {
        walk.step(entry)?;
        match entry.kind {
            EntryKind::File => {
                files.insert(&entry.path);
            }
            EntryKind::Hardlink if !files.contains(entry.target.as_deref().unwrap_or_default()) => {
                return Err(RepoError::Corrupt {
                    object: format!("tree of {part}"),
                    reason: format!(
                        "hard link {:?} does not name an earlier file",
                        String::from_utf8_lossy(&entry.path)
                    ),
                });
            }
            _ => {}
        }
    }
    walk.end().map(|_| ())
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
            let path = tree::join(&rel, name.as_bytes());
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
