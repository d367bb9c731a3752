//! Replacing a database's file (SQLite's database, Redis's RDB) with a stored part,
//! atomically and without trusting the directory: the directory of a database is
//! usually writable by the app's user, who could plant a symlink where we write. So
//! the new file gets an unpredictable name, is created exclusively without following
//! links (O_EXCL, O_NOFOLLOW, mode 0600), is checked to start with the format's magic
//! bytes, takes the old file's owner and mode through its own descriptor, and only
//! then is renamed over the old one. On any failure the staged file is removed and
//! the old file is untouched.
//!
//! Where there is no old file (a restore into a new place), the file gets the owner
//! and mode its source had at backup, recorded in the part ([`owner_of`]): by name
//! where this host knows it, else by number. The mode keeps only its read and write
//! bits: the content comes from the store, and a file the store could make
//! executable or setuid is not one root should create.

use std::io;
use std::path::{Path, PathBuf};

use crate::repo::archiver::REPLACE_PREFIX;
use crate::repo::manifest::{FileOwner, Manifest};

use crate::repo::{Owners, RepoError, Repository};

/// Why a file could not be replaced. Each is one line.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// Checking or adjusting the staged file through its descriptor failed.
    #[error(transparent)]
    Staged(io::Error),
    #[error(transparent)]
    Read(Box<RepoError>),
    #[error("part {part} does not hold what {} expects", path.display())]
    NotExpected { part: String, path: PathBuf },
}

impl ReplaceError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> ReplaceError {
        let path = path.to_path_buf();
        move |source| ReplaceError::Io { path, source }
    }
}

/// The name prefix of `name`'s staged copies: `.envsnap-replace-NAME-`.
fn staged_prefix(name: &str) -> String {
    format!("{REPLACE_PREFIX}{name}-")
}

/// Removes the staged copies of the file at `path` that an interrupted restore
/// left beside it (each restore, rollback and start-up calls this).
pub fn remove_leftovers(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = staged_prefix(&name.to_string_lossy());
    for item in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let is_ours = item.file_name().to_string_lossy().starts_with(&prefix);
        // Only regular files: a link planted in a directory the app's user can write
        // is left alone (remove_file would remove the link, not its target, but
        // nothing of ours is ever anything but a file).
        if is_ours && item.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(item.path());
        }
    }
}

/// Replaces the file at `path` with the stream part `part`, after checking it starts
/// with `magic` and then running `before_rename` (e.g. removing stale side files).
pub(super) async fn replace_with_part(
    repo: &Repository,
    manifest: &Manifest,
    part: &str,
    path: &Path,
    magic: &[u8],
    before_rename: impl FnOnce() -> Result<(), ReplaceError>,
) -> Result<(), ReplaceError> {
    use std::io::{Read, Seek};
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).expect("the operating system's random source failed");
    let staged = path.with_file_name(format!("{}{}", staged_prefix(&name), hex::encode(random)));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(ReplaceError::io(dir))?;
    }
    remove_leftovers(path);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&staged)
        .map_err(ReplaceError::io(&staged))?;
    let result = async {
        let mut out = tokio::fs::File::from_std(file);
        repo.read_stream(manifest, part, &mut out)
            .await
            .map_err(|e| ReplaceError::Read(Box::new(e)))?;
        out.sync_all().await.map_err(ReplaceError::io(&staged))?;
        let mut file = out.into_std().await;
        let mut header = vec![0u8; magic.len()];
        file.rewind().map_err(ReplaceError::Staged)?;
        if file.read_exact(&mut header).is_err() || header != magic {
            return Err(ReplaceError::NotExpected {
                part: part.to_owned(),
                path: path.to_path_buf(),
            });
        }
        // The old file's owner and mode, else the recorded ones, set through our
        // descriptor (never a path).
        let owner = match std::fs::symlink_metadata(path) {
            Ok(old) if old.is_file() => Some((old.uid(), old.gid(), old.mode() & 0o7777)),
            _ => recorded(manifest, part),
        };
        if let Some((uid, gid, mode)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(ReplaceError::Staged)?;
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(ReplaceError::Staged)?;
        }
        before_rename()?;
        std::fs::rename(&staged, path).map_err(ReplaceError::io(path))
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    result
}

/// The owner and mode of the file at `path`, to record with its part.
pub(super) fn owner_of(path: &Path) -> Option<FileOwner> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let user = nix::unistd::User::from_uid(meta.uid().into())
        .ok()
        .flatten();
    let group = nix::unistd::Group::from_gid(meta.gid().into())
        .ok()
        .flatten();
    Some(FileOwner {
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        user: user.map(|u| u.name),
        group: group.map(|g| g.name),
    })
}

/// The owner (names resolved on this host first, as a tree's restore does) and mode
/// recorded with `part`, the mode with only its read and write bits. Only root can
/// give a file away: anyone else keeps it.
fn recorded(manifest: &Manifest, part: &str) -> Option<(u32, u32, u32)> {
    let owner = manifest.part(part)?.file.as_ref()?;
    let mode = owner.mode & 0o666;
    let owners = Owners::new();
    if !owners.can_chown() {
        let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
        return Some((uid.as_raw(), gid.as_raw(), mode));
    }
    let uid = owners.uid_named(owner.user.as_deref(), owner.uid);
    let gid = owners.gid_named(owner.group.as_deref(), owner.gid);
    Some((uid, gid, mode))
}
