//! Restoring a tree part into a directory: plan, fetch into staging, then swap in.
//!
//! Into an empty or new target the restore streams (`restorer/streamed.rs`): the
//! tree is read, fetched and written in batches inside a private stage that holds
//! the tree itself, then moved in. Into a target with entries:
//!
//! 1. Plan (`restorer/plan.rs`): the backup's tree against the target, changing
//!    nothing; the plan's figures are what `--dry-run` shows.
//! 2. Fetch (here): the chunks of the files to write are grouped by pack and fetched
//!    with bounded concurrency; each is hash-checked and written at its offset into a
//!    staging file inside the target (`restorer/stage.rs`). Holes are never written,
//!    so sparse files stay sparse. If any chunk is missing or corrupt the restore
//!    stops here, and the target is exactly as it was.
//! 3. Apply (`restorer/apply.rs`): remove extra paths, create directories, give
//!    staged entries their metadata and rename them into place, then directory
//!    metadata.

mod apply;
mod plan;
mod restoring;
mod stage;
mod streamed;
mod walk;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use futures::StreamExt;

use super::id::Id;
use super::manifest::{Manifest, PartLayout};
use super::metadata::Owners;
use super::pack::PackEntry;
use super::pinned::Pinned;
use super::reader::part_of;
use super::spans::{FetchedSpan, read_spans};
use super::{RepoError, Repository};
use apply::apply;
use restoring::{ChunkTargets, Restoring};
pub use stage::remove_stale_stages;
use stage::{Layout, Stage};

pub use plan::RestorePlan;

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
        let stale = target.to_path_buf();
        tokio::task::spawn_blocking(move || remove_stale_stages(&stale))
            .await
            .map_err(|e| RepoError::Pipeline(e.to_string()))?;
        if is_empty_or_missing(target)? {
            let record = part_of(manifest, part, PartLayout::Tree)?;
            return self.restore_streamed(record, target).await;
        }
        let (work, plan, chunks) = self.prepare(manifest, part, target, exclude).await?;
        let root = Pinned::target(target).map_err(|e| RepoError::io(target, e))?;
        let restoring = Arc::new(Restoring {
            stage: Arc::new(Stage::create(&root, target, Layout::Numbered)?),
            work,
            owners: Owners::new(),
            stopped: AtomicBool::new(false),
            target: target.to_path_buf(),
        });
        let fetched = self
            .fetch_into_stage(chunks, &restoring)
            .await
            .map_err(|e| e.in_part(part));
        // The stage goes with the last reference to it (see `Stage`), on a blocking
        // thread: after a failure it may hold a whole tree.
        let applied =
            tokio::task::spawn_blocking(move || fetched.and_then(|()| apply(&restoring, &root)))
                .await
                .map_err(|e| RepoError::Pipeline(e.to_string()))?;
        applied.map(|()| plan)
    }

    /// Fetches every needed chunk once and writes it into each staged file using it.
    async fn fetch_into_stage(
        &self,
        chunks: Vec<(Id, PackEntry)>,
        restoring: &Arc<Restoring>,
    ) -> Result<(), RepoError> {
        let preparing = restoring.clone();
        let targets = tokio::task::spawn_blocking(move || preparing.prepare_stage())
            .await
            .map_err(|e| RepoError::Pipeline(e.to_string()))??;
        let mut by_pack: HashMap<Id, Vec<PackEntry>> = HashMap::new();
        for (pack, entry) in chunks {
            by_pack.entry(pack).or_default().push(entry);
        }
        let spans: Vec<(Id, Vec<PackEntry>)> = by_pack
            .into_iter()
            .flat_map(|(pack, entries)| read_spans(entries).into_iter().map(move |s| (pack, s)))
            .collect();
        let targets = Arc::new(targets);
        let mut writes = futures::stream::iter(spans)
            .map(|(pack, entries)| {
                self.restore_span(pack, entries, targets.clone(), restoring.clone())
            })
            .buffer_unordered(self.store().concurrency());
        // After a failure the spans in flight are waited for (they stop at their next
        // chunk): a writer still running could otherwise make a file in the stage
        // after it is removed.
        let mut failed = None;
        while let Some(written) = writes.next().await {
            if let Err(e) = written {
                restoring.stop();
                failed.get_or_insert(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Fetches one span of a pack (one range read) and writes its chunks.
    async fn restore_span(
        &self,
        pack: Id,
        span_entries: Vec<PackEntry>,
        targets: Arc<ChunkTargets>,
        restoring: Arc<Restoring>,
    ) -> Result<(), RepoError> {
        if restoring.stopped() {
            return Ok(());
        }
        let span = FetchedSpan::fetch(self, pack, &span_entries).await?;
        tokio::task::spawn_blocking(move || {
            for entry in span_entries.iter().take_while(|_| !restoring.stopped()) {
                let plain = span.decode(entry)?;
                for (index, offset) in targets
                    .get(&entry.id)
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    restoring.write_chunk(*index, *offset, &plain)?;
                }
            }
            Ok::<_, RepoError>(())
        })
        .await
        .map_err(|e| RepoError::Pipeline(e.to_string()))?
    }
}

/// Whether `target` holds nothing (stale stages were removed first): then nothing
/// there needs replacing or protecting, and the restore streams (`streamed.rs`).
fn is_empty_or_missing(target: &Path) -> Result<bool, RepoError> {
    match std::fs::read_dir(target) {
        Ok(mut listing) => Ok(listing.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        // Not a directory, unreadable: the plan names the problem.
        Err(_) => Ok(false),
    }
}
