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
//! - **Tree**, into a new or empty target: there is nothing to replace, so the stage
//!   holds the backup's tree itself, each entry at its own path and given its
//!   metadata there, and the target receives each top-level entry in one rename.
//!   That spares a rename and a second open per file (issue 16: restic's count of
//!   system calls per restored file), and still shows nothing half written.
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

/// Staging directories an interrupted restore left in the target.
pub fn remove_stale_stages(target: &Path) {
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

/// How entries are laid out in the stage (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    Numbered,
    Tree,
}

/// A restore's private staging directory, pinned.
pub(super) struct Stage {
    pub(super) dir: Pinned,
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
        let dir = root
            .stage(&name)
            .map_err(|e| RepoError::io(target.join(&name), e))?;
        Ok(Stage { dir, name, layout })
    }

    /// Where entry `index` is staged, relative to the stage.
    pub(super) fn name_of(&self, index: usize, entry: &Entry) -> OsString {
        match self.layout {
            Layout::Tree => OsStr::from_bytes(&entry.path).to_owned(),
            Layout::Numbered => format!("{}/{index}", index / STAGED_PER_DIR).into(),
        }
    }

    /// Tree layout: makes every directory of the tree (private until the end), so
    /// files can be created at their paths.
    pub(super) fn make_directories(&self, entries: &[Entry]) -> std::io::Result<()> {
        let dirs = entries.iter().skip(1).filter(|e| e.kind == EntryKind::Dir);
        for dir in dirs.filter(|_| self.layout == Layout::Tree) {
            self.dir.mkdir(OsStr::from_bytes(&dir.path))?;
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

    /// Empties the stage through its pinned path, then removes it from the target.
    pub(super) fn remove(&self, root: &Pinned) {
        let path = self.dir.path();
        for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
            let inside = path.join(entry.file_name());
            let _ = match entry.file_type().is_ok_and(|t| t.is_dir()) {
                true => std::fs::remove_dir_all(inside),
                false => std::fs::remove_file(inside),
            };
        }
        let _ = root.remove_dir(&self.name);
    }
}

/// A staging directory's name: hidden, recognisable, unpredictable.
fn new_stage_name() -> String {
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).expect("the operating system's random source failed");
    format!("{STAGING_PREFIX}{}", hex::encode(random))
}
