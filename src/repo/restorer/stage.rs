//! The staging area of a restore: a hidden directory inside the target (same
//! filesystem, so the final rename is atomic) where fetched files are written before
//! anything in the target changes. Its name starts with
//! [`STAGING_PREFIX`](crate::repo::archiver::STAGING_PREFIX), which backups and the
//! restore's own scan skip. A staging directory left by a crash is removed by the
//! next restore.

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::OFlag;

use crate::repo::RepoError;
use crate::repo::archiver::STAGING_PREFIX;
use crate::repo::pinned::Pinned;

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

/// A staging directory's name: hidden, recognisable, unpredictable.
pub(super) fn new_stage_name() -> String {
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).expect("the operating system's random source failed");
    format!("{STAGING_PREFIX}{}", hex::encode(random))
}

/// Empties the stage through its pinned path, then removes it from the target.
pub(super) fn remove_stage(root: &Pinned, name: &str, stage: &Pinned) {
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
pub(super) fn staged_name(index: usize) -> String {
    format!("{}/{index}", index / STAGED_PER_DIR)
}

/// The staging name of entry `index`, its directory created if needed (links and
/// fifos; files go through [`create_staged_file`]).
pub(super) fn staging_slot(stage: &Pinned, index: usize) -> Result<String, RepoError> {
    let dir = (index / STAGED_PER_DIR).to_string();
    stage
        .mkdir(&dir)
        .or_else(ignore_exists)
        .map_err(|e| RepoError::io(&dir, e))?;
    Ok(staged_name(index))
}

/// Creates the staged file of entry `index` with its final size (holes stay holes).
pub(super) fn create_staged_file(stage: &Pinned, index: usize, size: u64) -> Result<(), RepoError> {
    let file = new_staged_file(stage, index)?;
    if size > 0 {
        let name = staged_name(index);
        file.set_len(size).map_err(|e| RepoError::io(&name, e))?;
    }
    Ok(())
}

/// Opens the staged file of entry `index` for writing, creating it if it is not
/// there yet (a file of one chunk is created by its only write: one `open` instead
/// of two). A staging directory is made when a file finds it missing: one `mkdir`
/// per 1024 files, not one (failing) per file.
pub(super) fn new_staged_file(stage: &Pinned, index: usize) -> Result<File, RepoError> {
    let name = staged_name(index);
    let io = |e: std::io::Error| RepoError::io(&name, e);
    let create = || stage.open_file(&name, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL);
    match create() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = (index / STAGED_PER_DIR).to_string();
            stage
                .mkdir(&dir)
                .or_else(ignore_exists)
                .map_err(|e| RepoError::io(&dir, e))?;
            create()
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            stage.open_file(&name, OFlag::O_WRONLY)
        }
        other => other,
    }
    .map_err(io)
}

fn ignore_exists(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        Ok(())
    } else {
        Err(e)
    }
}
