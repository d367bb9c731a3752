//! A restore under way: its plan, its stage and what the threads writing fetched
//! chunks into the stage share with the apply step.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::plan::Work;
use super::stage::{Stage, written_whole};
use crate::repo::RepoError;
use crate::repo::id::Id;
use crate::repo::metadata::{self, Owners};
use crate::repo::pinned::Node;
use crate::repo::tree::EntryKind;

/// Where each chunk goes: (entry index, offset in the file).
pub(super) type ChunkTargets = HashMap<Id, Vec<(usize, u64)>>;

/// What the threads writing fetched chunks share with the apply step.
pub(super) struct Restoring {
    pub(super) work: Work,
    /// Shared by the batches of a streamed restore.
    pub(super) stage: Arc<Stage>,
    pub(super) owners: Owners,
    /// The target as people know it, for error lines.
    pub(super) target: PathBuf,
    /// Set when a fetch failed: the other writers stop at their next chunk.
    pub(super) stopped: AtomicBool,
}

impl Restoring {
    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    pub(super) fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// An error about entry `index`, named by its path under the target.
    pub(super) fn io(&self, index: usize) -> impl Fn(std::io::Error) -> RepoError + '_ {
        move |e| {
            let path = OsStr::from_bytes(&self.work.entries[index].path);
            RepoError::io(self.target.join(path), e)
        }
    }

    /// Makes the stage ready for the chunks: the tree's directories (tree layout) and
    /// every file of more than one chunk, at its size; returns where each chunk goes.
    pub(super) fn prepare_stage(&self) -> Result<ChunkTargets, RepoError> {
        let entries = &self.work.entries;
        self.stage
            .make_directories(entries)
            .map_err(|(index, e)| self.io(index)(e))?;
        let mut targets: ChunkTargets = HashMap::new();
        for (index, entry) in entries.iter().enumerate() {
            if self.work.create[index] && entry.kind == EntryKind::File {
                if !written_whole(entry) {
                    self.stage
                        .create_file(index, entry)
                        .map_err(self.io(index))?;
                }
                for c in &entry.chunks {
                    targets.entry(c.id).or_default().push((index, c.offset));
                }
            }
        }
        Ok(targets)
    }

    /// Writes one fetched chunk into entry `index` at `offset`. A file of one chunk is
    /// created by this write and given its metadata through the same descriptor.
    pub(super) fn write_chunk(
        &self,
        index: usize,
        offset: u64,
        plain: &[u8],
    ) -> Result<(), RepoError> {
        let entry = &self.work.entries[index];
        let io = self.io(index);
        if !written_whole(entry) {
            let file = self.stage.open_file(index, entry).map_err(&io)?;
            return file.write_all_at(plain, offset).map_err(io);
        }
        let file = self.stage.new_file(index, entry).map_err(&io)?;
        file.write_all_at(plain, 0).map_err(&io)?;
        let node = Node::created(file).map_err(&io)?;
        metadata::set(&node, entry, &self.owners, true).map_err(io)
    }
}
