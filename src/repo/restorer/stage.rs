//! The staging area of a restore: a hidden directory inside the target (same
//! filesystem, so moving out of it is a rename) where fetched files are written before
//! anything in the target changes. Its name starts with
//! [`STAGING_PREFIX`](crate::repo::archiver::STAGING_PREFIX), which backups and the
//! restore's own scan skip. A staging directory left by a crash is removed by the
//! next restore.
//!
//! Two layouts ([`Layout`]):
//! - **Numbered**, into a target that has entries (a delta restore): each entry is
//!   staged under its number (`3/3172`, 1024 to a directory) and renamed onto its
//!   path by `apply.rs`, replacing what is there.
//! - **Tree**, into a new or empty target (`streamed.rs`): there is nothing to
//!   replace, so the stage holds the backup's tree itself, each entry at its own
//!   path and given its metadata there, and the target receives each top-level
//!   entry in one rename. That spares a rename and a second open per file (issue
//!   16: restic's count of system calls per restored file), and still shows
//!   nothing half written.
//!
//! Either way a file that is one chunk is created by that chunk's write and given
//! its metadata through the same descriptor ([`written_whole`]).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::OFlag;

use crate::repo::RepoError;
use crate::repo::archiver::STAGING_PREFIX;
use crate::repo::pinned::Pinned;
use crate::repo::tree::{Entry, EntryKind};

/// Staging directories an interrupted restore left in the target. Only our own
/// 0700 directories, opened without following: nobody else can have put anything
/// there, and a look-alike name of another user's is left alone.
pub fn remove_stale_stages(target: &Path) {
    let (Ok(root), Ok(entries)) = (Pinned::target(target), std::fs::read_dir(target)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.as_bytes().starts_with(STAGING_PREFIX.as_bytes()) {
            continue;
        }
        if let Some(stale) = root.own_private_dir(&name) {
            empty(&stale);
            let _ = root.remove_dir(&name);
        }
    }
}

/// Removes everything in `dir`, one of our stages. A restore not run as root that
/// failed late may have left directories in it without write or search access for
/// us: those are opened up and the removal tried again.
fn empty(dir: &Pinned) {
    let path = dir.path();
    for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
        let inside = path.join(entry.file_name());
        let removed = match entry.file_type().is_ok_and(|t| t.is_dir()) {
            true => std::fs::remove_dir_all(&inside).or_else(|_| {
                open_up(&inside);
                std::fs::remove_dir_all(&inside)
            }),
            false => std::fs::remove_file(&inside),
        };
        if let Err(e) = removed {
            tracing::warn!(error = %e, "a restore's staging directory could not be emptied");
        }
    }
}

/// Gives `dir` and every directory below it mode 0700, never following a symlink
/// (only entries listed as directories are changed; the stage is private, so none
/// can be swapped meanwhile).
fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            open_up(&entry.path());
        }
    }
}

/// How entries are laid out in the stage (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    Numbered,
    Tree,
}

/// A restore's private staging directory, pinned. Dropping it removes it with
/// whatever is left inside, so a restore that fails, panics or is cancelled leaves
/// none behind (the last writer still running drops it).
pub(super) struct Stage {
    pub(super) dir: Pinned,
    /// The target, to remove the stage from.
    root: Pinned,
    name: String,
    pub(super) layout: Layout,
}

/// Staged files go 1024 to a directory: one directory of a hundred thousand names
/// makes every create and rename search a huge directory.
const STAGED_PER_DIR: usize = 1024;

/// Whether a file is one chunk covering all of it: such a file is created by its only
/// write and given its metadata through that write's descriptor.
pub(super) fn written_whole(entry: &Entry) -> bool {
    entry.kind == EntryKind::File
        && matches!(entry.chunks.as_slice(),
            [only] if only.offset == 0 && u64::from(only.len) == entry.size)
}

impl Stage {
    /// Creates the staging directory in the target `root` (shown as `target`).
    pub(super) fn create(root: &Pinned, target: &Path, layout: Layout) -> Result<Stage, RepoError> {
        let name = new_stage_name();
        let io = |e| RepoError::io(target, e);
        let dir = root.stage(&name).map_err(io)?;
        let root = root.try_clone().map_err(io)?;
        Ok(Stage {
            dir,
            root,
            name,
            layout,
        })
    }

    /// Where entry `index` is staged, relative to the stage.
    pub(super) fn name_of(&self, index: usize, entry: &Entry) -> OsString {
        match self.layout {
            Layout::Tree => OsStr::from_bytes(&entry.path).to_owned(),
            Layout::Numbered => format!("{}/{index}", index / STAGED_PER_DIR).into(),
        }
    }

    /// Tree layout: makes every directory of the tree (private until the end), so
    /// files can be created at their paths. On failure, the index of the entry.
    pub(super) fn make_directories(
        &self,
        entries: &[Entry],
    ) -> Result<(), (usize, std::io::Error)> {
        if self.layout != Layout::Tree {
            return Ok(());
        }
        let dirs = entries.iter().enumerate();
        for (index, dir) in dirs.filter(|(_, e)| e.kind == EntryKind::Dir && !e.path.is_empty()) {
            self.dir
                .mkdir(OsStr::from_bytes(&dir.path))
                .map_err(|e| (index, e))?;
        }
        Ok(())
    }

    /// Creates the staged file of entry `index` with its final size (holes stay holes).
    pub(super) fn create_file(&self, index: usize, entry: &Entry) -> std::io::Result<()> {
        let file = self.new_file(index, entry)?;
        if entry.size > 0 {
            file.set_len(entry.size)?;
        }
        Ok(())
    }

    /// Opens the staged file of entry `index`, made by [`Stage::create_file`].
    pub(super) fn open_file(&self, index: usize, entry: &Entry) -> std::io::Result<File> {
        self.dir
            .open_file(&self.name_of(index, entry), OFlag::O_WRONLY)
    }

    /// Creates the staged file of entry `index` and opens it for writing. A numbered
    /// staging directory is made when a file finds it missing: one `mkdir` per 1024
    /// files, not one (failing) per file.
    pub(super) fn new_file(&self, index: usize, entry: &Entry) -> std::io::Result<File> {
        let name = self.name_of(index, entry);
        let create = || {
            self.dir
                .open_file(&name, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL)
        };
        match create() {
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && self.layout == Layout::Numbered =>
            {
                self.make_bucket(index)?;
                create()
            }
            other => other,
        }
    }

    /// The staging name of entry `index` for a link or fifo, its numbered directory
    /// made if needed.
    pub(super) fn slot(&self, index: usize, entry: &Entry) -> std::io::Result<OsString> {
        if self.layout == Layout::Numbered {
            self.make_bucket(index)?;
        }
        Ok(self.name_of(index, entry))
    }

    fn make_bucket(&self, index: usize) -> std::io::Result<()> {
        match self.dir.mkdir(&(index / STAGED_PER_DIR).to_string()) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }

    /// Empties the stage through its pinned path, then removes it from the target
    /// (again on drop: then a no-op).
    pub(super) fn remove(&self) {
        empty(&self.dir);
        let _ = self.root.remove_dir(&self.name);
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A staging directory's name: hidden, recognisable, unpredictable.
fn new_stage_name() -> String {
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).expect("the operating system's random source failed");
    format!("{STAGING_PREFIX}{}", hex::encode(random))
}
