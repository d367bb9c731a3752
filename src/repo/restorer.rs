//! Restoring a tree part into a directory: plan, fetch into staging, then swap in.
//!
//! 1. Plan (`restorer/plan.rs`): the backup's tree against the target, changing
//!    nothing; the plan's figures are what `--dry-run` shows.
//! 2. Fetch (here): the chunks of the files to write are grouped by pack and fetched
//!    with bounded concurrency; each is hash-checked and written at its offset into a
//!    staging file inside the target (`restorer/stage.rs`). Holes are never written,
//!    so sparse files stay sparse. If any chunk is missing or corrupt the restore
//!    stops here, and the target is exactly as it was.
//! 3. Apply (`restorer/apply.rs`): remove extra paths, create directories, give
//!    staged files their metadata and rename them into place, then links, then
//!    directory metadata.

mod apply;
mod plan;
mod stage;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use nix::fcntl::OFlag;

use super::id::Id;
use super::manifest::Manifest;
use super::pack::{PackEntry, decode_blob};
use super::pinned::Pinned;
use super::tree::EntryKind;
use super::{RepoError, Repository, pack_key};
use apply::apply;
use plan::Work;
pub use stage::remove_stale_stages;
use stage::{create_staged_file, new_stage_name, remove_stage, staged_name};

pub use plan::RestorePlan;

/// Packs fetched at once during a restore.
const PACKS_IN_FLIGHT: usize = 2;

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
