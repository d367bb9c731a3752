//! Restoring into an empty or new target, streamed: memory follows a batch of
//! entries, not the number of files (issue 16: a million files).
//!
//! Nothing in the target needs replacing or protecting, so the stage holds the
//! backup's tree itself (`stage.rs`, tree layout). The tree is read [`BATCH`] entries
//! at a time; each batch's directories are made, its chunks located, fetched and
//! written (as `restorer.rs` does for a whole plan), its links made and its files
//! given their metadata, all inside the private stage. A directory gets its metadata
//! once the walk has left its subtree and the batch holding the subtree's last
//! entries is written: deepest first, as entries made in a directory change its
//! mtime. When the whole tree is staged and checked, each top-level entry is moved
//! into the target with one rename that never replaces, top-level directories get
//! their metadata through a descriptor opened before the move, and the target its
//! own last. A failure anywhere before the moves leaves the target as it was.
//!
//! The tree is checked as it streams by, as `plan.rs` checks a whole one: strictly in
//! tree order, every entry inside a directory of the tree (so nothing is written
//! through a symlink the tree itself makes); a hard link is made through directories
//! opened one at a time without following symlinks.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use super::apply::{finish_in_stage, set_root_metadata};
use super::plan::{RestorePlan, Work};
use super::restoring::Restoring;
use super::stage::{Layout, Stage};
use super::walk::Walk;
use crate::repo::metadata::{self, Owners};
use crate::repo::pinned::Pinned;
use crate::repo::reader::TreeEntries;
use crate::repo::tree::Entry;
use crate::repo::{RepoError, Repository, manifest::PartRecord};

/// Entries read, fetched and written at a time.
const BATCH: usize = 4096;

/// The reading side of a streamed restore, moved to blocking threads batch by batch.
struct Reading {
    entries: TreeEntries,
    walk: Walk,
}

impl Reading {
    /// The next batch of entries (empty at the end of the tree) and the directories
    /// whose subtrees it completed.
    fn next_batch(&mut self) -> Result<(Vec<Entry>, Vec<Entry>), RepoError> {
        let mut batch = Vec::with_capacity(BATCH);
        for entry in self.entries.by_ref().take(BATCH) {
            let entry = entry?;
            self.walk.step(&entry)?;
            batch.push(entry);
        }
        Ok((batch, std::mem::take(&mut self.walk.closed)))
    }
}

impl Repository {
    /// Restores tree part `record` into `target`, which is empty or missing. A
    /// target this restore made is removed again if the restore fails.
    pub(super) async fn restore_streamed(
        &self,
        record: &PartRecord,
        target: &Path,
    ) -> Result<RestorePlan, RepoError> {
        let made = !target.exists();
        std::fs::create_dir_all(target).map_err(|e| RepoError::io(target, e))?;
        let root = Pinned::target(target).map_err(|e| RepoError::io(target, e))?;
        let stage = Arc::new(Stage::create(&root, target, Layout::Tree)?);
        let restored = self.stream_into(record, target, root, stage.clone()).await;
        // The last reference removes the stage (`Stage`), which after a failure may
        // hold a whole tree: on a blocking thread.
        let target = target.to_path_buf();
        let failed = restored.is_err();
        tokio::task::spawn_blocking(move || {
            drop(stage);
            if failed && made {
                let _ = std::fs::remove_dir(&target);
            }
        })
        .await
        .map_err(pipeline)?;
        restored
    }

    async fn stream_into(
        &self,
        record: &PartRecord,
        target: &Path,
        root: Pinned,
        stage: Arc<Stage>,
    ) -> Result<RestorePlan, RepoError> {
        let reading = Arc::new(Mutex::new(Reading {
            entries: TreeEntries::open(self, record)?,
            walk: Walk::new(&record.part),
        }));
        let mut plan = RestorePlan::default();
        loop {
            let next = reading.clone();
            let (batch, closed) = tokio::task::spawn_blocking(move || lock(&next).next_batch())
                .await
                .map_err(pipeline)??;
            if batch.is_empty() {
                break;
            }
            let restoring = Arc::new(Restoring {
                work: Work::fresh(batch),
                stage: stage.clone(),
                owners: Owners::new(),
                target: target.to_path_buf(),
                stopped: AtomicBool::new(false),
            });
            let chunks = self.locate_needed(&restoring.work, &record.part).await?;
            plan.add(&RestorePlan::of(&restoring.work, &chunks));
            self.fetch_into_stage(chunks, &restoring)
                .await
                .map_err(|e| e.in_part(&record.part))?;
            tokio::task::spawn_blocking(move || {
                finish_in_stage(&restoring)?;
                let r = &restoring;
                set_directory_metadata(&r.stage, &closed, &r.owners, &r.target)
            })
            .await
            .map_err(pipeline)??;
        }
        let target = target.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut reading = lock(&reading);
            let root_entry = reading.walk.end()?;
            let owners = Owners::new();
            let closed = std::mem::take(&mut reading.walk.closed);
            set_directory_metadata(&stage, &closed, &owners, &target)?;
            move_in(&stage, &root, &reading.walk.top, &owners, &target)?;
            stage.remove();
            set_root_metadata(&root, &root_entry, &owners, &target)
        })
        .await
        .map_err(pipeline)??;
        Ok(plan)
    }
}

fn lock(reading: &Mutex<Reading>) -> std::sync::MutexGuard<'_, Reading> {
    reading
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn pipeline(e: tokio::task::JoinError) -> RepoError {
    RepoError::Pipeline(e.to_string())
}

/// Gives directories whose subtrees are written their metadata, in the stage.
fn set_directory_metadata(
    stage: &Stage,
    closed: &[Entry],
    owners: &Owners,
    target: &Path,
) -> Result<(), RepoError> {
    for dir in closed {
        let name = OsStr::from_bytes(&dir.path);
        (stage.dir.node(name))
            .and_then(|node| metadata::set(&node, dir, owners, true))
            .map_err(|e| RepoError::io(target.join(name), e))?;
    }
    Ok(())
}

/// Moves every top-level entry of the finished stage into the target, never over
/// something there. A top-level directory is moved while still our private 0700 one
/// (moving a directory needs write access to it), then given its metadata through
/// a descriptor opened before the move: it cannot be swapped meanwhile. The stage
/// is listed again after each round of moves, never changed while being listed.
fn move_in(
    stage: &Stage,
    root: &Pinned,
    top: &HashMap<Vec<u8>, Entry>,
    owners: &Owners,
    target: &Path,
) -> Result<(), RepoError> {
    loop {
        let listing = std::fs::read_dir(stage.dir.path()).map_err(|e| RepoError::io(target, e))?;
        let names: Vec<_> = listing
            .take(BATCH)
            .map(|item| item.map(|item| item.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| RepoError::io(target, e))?;
        if names.is_empty() {
            return Ok(());
        }
        for name in names {
            let shown: PathBuf = target.join(&name);
            let io = |e| RepoError::io(&shown, e);
            let dir = top.get(name.as_bytes());
            let node = dir.map(|_| stage.dir.node(&name)).transpose().map_err(io)?;
            stage.dir.move_new(&name, root).map_err(io)?;
            if let (Some(entry), Some(node)) = (dir, node) {
                metadata::set(&node, entry, owners, true).map_err(io)?;
            }
        }
    }
}
