//! Step 3 of a restore: put every staged entry in place, once every byte is staged
//! and checked.
//! - Into a target with entries ([`apply`], numbered stage): remove extra paths,
//!   create directories, rename staged entries onto their paths (given their owner,
//!   mode, xattrs and mtime first), then directory metadata deepest first (creating
//!   entries changes a directory's mtime), the target's own last.
//! - Into an empty target (tree stage, `streamed.rs`): [`finish_in_stage`] makes
//!   each batch's links and gives its files of several chunks their metadata.
//!
//! Owners are restored by name when the name exists on this host, else by id (as tar
//! does), and only when running as root.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::restoring::Restoring;
use super::stage::written_whole;
use crate::repo::RepoError;
use crate::repo::metadata::{self, Owners};
use crate::repo::pinned::{Node, Pinned, Place, Resolver};
use crate::repo::tree::{Entry, EntryKind};

/// Puts everything in place (numbered stage). Every target path goes through a
/// [`Resolver`] (`pinned.rs`): none can be redirected. Errors name the path under the
/// target, as people know it.
pub(super) fn apply(restoring: &Restoring, root: &Pinned) -> Result<(), RepoError> {
    let mut resolver = Resolver::new(root);
    replace_in_target(restoring, &mut resolver)?;
    restoring.stage.remove();
    let root_entry = &restoring.work.entries[0];
    set_root_metadata(root, root_entry, &restoring.owners, &restoring.target)
}

/// The target's own metadata: last, as everything put in it (and removing the
/// stage) changed its mtime.
pub(super) fn set_root_metadata(
    root: &Pinned,
    entry: &Entry,
    owners: &Owners,
    target: &Path,
) -> Result<(), RepoError> {
    Resolver::new(root)
        .place(b"")
        .and_then(|place| place.node())
        .and_then(|node| metadata::set(&node, entry, owners, true))
        .map_err(|e| RepoError::io(target, e))
}

/// Tree stage: gives the batch's files of several chunks their metadata (the others
/// got theirs when written) and makes its symlinks, fifos and hard links, inside the
/// private stage. A hard link's first name is reached one directory at a time
/// without following symlinks: the tree's own symlinks are in the stage too.
pub(super) fn finish_in_stage(restoring: &Restoring) -> Result<(), RepoError> {
    let (work, stage, owners) = (&restoring.work, &restoring.stage, &restoring.owners);
    let mut within = Resolver::new(&stage.dir);
    for (index, entry) in work.entries.iter().enumerate() {
        let io = restoring.io(index);
        let name = stage.name_of(index, entry);
        let fresh_metadata = || {
            let node = stage.dir.node(&name)?;
            metadata::set(&node, entry, owners, true)
        };
        match entry.kind {
            EntryKind::Dir => {}
            EntryKind::File if written_whole(entry) => {}
            EntryKind::File => fresh_metadata().map_err(io)?,
            EntryKind::Symlink | EntryKind::Fifo => {
                make_special(restoring, index, &name).map_err(&io)?;
                fresh_metadata().map_err(io)?;
            }
            EntryKind::Hardlink => {
                let first = within.place(entry.target.as_deref().unwrap_or_default());
                first
                    .and_then(|first| first.link_to(&stage.dir, &name))
                    .map_err(io)?;
            }
        }
    }
    Ok(())
}

/// Creates the symlink or fifo of entry `index` at `name` in the stage.
fn make_special(restoring: &Restoring, index: usize, name: &OsStr) -> std::io::Result<()> {
    let entry = &restoring.work.entries[index];
    match entry.kind {
        EntryKind::Symlink => {
            let link = OsStr::from_bytes(entry.target.as_deref().unwrap_or_default());
            restoring.stage.dir.symlink(link, name)
        }
        _ => restoring.stage.dir.mkfifo(name),
    }
}

/// Numbered layout: removes what the backup lacks, puts each entry in place (renamed
/// from the stage or its metadata corrected), then directory metadata deepest first.
fn replace_in_target(restoring: &Restoring, resolver: &mut Resolver<'_>) -> Result<(), RepoError> {
    let work = &restoring.work;
    let named = |rel: &[u8]| {
        let shown = restoring.target.join(OsStr::from_bytes(rel));
        move |e: RepoError| match e {
            RepoError::Io { source, .. } => RepoError::io(&shown, source),
            other => other,
        }
    };
    for rel in &work.remove {
        remove_path(resolver, rel).map_err(named(rel))?;
    }
    // The directories this restore made, by identity: the last pass sets their
    // metadata only on those very inodes.
    let mut made: HashMap<usize, (u64, u64)> = HashMap::new();
    for (index, entry) in work.entries.iter().enumerate() {
        if let Some(identity) =
            put_in_place(resolver, restoring, index).map_err(named(&entry.path))?
        {
            made.insert(index, identity);
        }
    }
    let dirs = work.entries.iter().enumerate().skip(1).rev();
    for (index, entry) in dirs.filter(|(_, e)| e.kind == EntryKind::Dir) {
        let known = work.existing.get(&entry.path);
        let expected = made.get(&index).copied().or(known.map(|k| k.dev_ino));
        let at = place(resolver, &entry.path).map_err(named(&entry.path))?;
        at.node()
            .and_then(|node| same_inode(&node, expected).map(|()| node))
            .and_then(|node| metadata::set(&node, entry, &restoring.owners, known.is_none()))
            .map_err(restoring.io(index))?;
    }
    Ok(())
}

/// A kept or made entry must still be the inode the restore saw or made: another
/// writer that swapped it meanwhile gets an error, never our chown or chmod.
fn same_inode(node: &Node, expected: Option<(u64, u64)>) -> std::io::Result<()> {
    let stat = node.stat();
    match expected {
        Some(identity) if identity != (stat.st_dev, stat.st_ino) => Err(std::io::Error::other(
            "was replaced by another writer during the restore",
        )),
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
    restoring: &Restoring,
    index: usize,
) -> Result<Option<(u64, u64)>, RepoError> {
    let (work, stage, owners) = (&restoring.work, &restoring.stage, &restoring.owners);
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
        // Given its metadata when its only chunk was written.
        EntryKind::File if create && written_whole(entry) => {
            at.rename_from(&stage.dir, &stage.name_of(index, entry))
                .map_err(io)?;
        }
        EntryKind::File | EntryKind::Symlink | EntryKind::Fifo if create => {
            let staged = stage.slot(index, entry).map_err(io)?;
            if entry.kind != EntryKind::File {
                make_special(restoring, index, &staged).map_err(io)?;
            }
            let node = stage.dir.node(&staged).map_err(io)?;
            metadata::set(&node, entry, owners, true).map_err(io)?;
            at.rename_from(&stage.dir, &staged).map_err(io)?;
        }
        EntryKind::Hardlink if create => {
            let first = place(resolver, entry.target.as_deref().unwrap_or_default())?;
            let staged = stage.slot(index, entry).map_err(io)?;
            first.link_to(&stage.dir, &staged).map_err(io)?;
            at.rename_from(&stage.dir, &staged).map_err(io)?;
        }
        EntryKind::Hardlink => {}
        EntryKind::File | EntryKind::Symlink | EntryKind::Fifo => {
            let node = at.node().map_err(io)?;
            let seen = work.existing.get(&entry.path).map(|e| e.dev_ino);
            same_inode(&node, seen).map_err(io)?;
            metadata::set(&node, entry, owners, false).map_err(io)?;
        }
    }
    Ok(None)
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
        assert!(same_inode(&node, Some(seen)).is_ok());

        // Made while the old one still exists, so it cannot reuse its inode number.
        std::fs::write(dir.path().join("other"), "y").unwrap();
        std::fs::rename(dir.path().join("other"), dir.path().join("kept")).unwrap();
        let node = resolver.place(b"kept").unwrap().node().unwrap();
        let err = same_inode(&node, Some(seen)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "was replaced by another writer during the restore"
        );
    }
}
