//! Step 3 of a restore: remove extra paths, create directories, give staged files
//! their owner, mode, xattrs and mtime and rename them into place, then links, then
//! directory metadata deepest first (creating entries changes a directory's mtime).
//! It runs only once every byte is staged and checked.
//!
//! Owners are restored by name when the name exists on this host, else by id (as tar
//! does), and only when running as root.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::plan::Work;
use super::stage::{staged_name, staging_slot};
use crate::repo::RepoError;
use crate::repo::metadata::{self, Owners};
use crate::repo::pinned::{Node, Pinned, Place, Resolver};
use crate::repo::tree::EntryKind;

/// Puts everything in place. Runs only once every byte is staged and checked.
/// Every target path goes through a [`Resolver`] (`pinned.rs`): none can be
/// redirected. Errors name the path under `target`, as people know it.
pub(super) fn apply(
    work: &Work,
    root: &Pinned,
    stage: &Pinned,
    target: &Path,
) -> Result<(), RepoError> {
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
