//! Verify: is every backup restorable?
//!
//! Structure (always): every chunk each manifest reaches is in the chunk index, and
//! its pack exists in the store. With `read_data`: every pack in the store is read
//! whole, its id checked against its bytes, its trailer parsed, and every blob
//! decoded and hash-checked. Problems are collected (up to a limit) with the backup,
//! part and object they concern, rather than stopping at the first.

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::id::Id;
use super::manifest::Manifest;
use super::pack::{decode_blob, parse_pack};
use super::reader::for_each_chunk;
use super::{RepoError, Repository};

const MAX_PROBLEMS: usize = 1000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub backups: u64,
    pub chunks_referenced: u64,
    pub packs_read: u64,
    pub bytes_read: u64,
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(text);
        }
    }
}

impl Repository {
    /// Checks `manifests` (structure) and, with `read_data`, every pack's bytes.
    pub async fn verify(
        &self,
        manifests: &[Manifest],
        read_data: bool,
    ) -> Result<VerifyReport, RepoError> {
        let _reading = self.writers().begin_read().await;
        let mut report = VerifyReport {
            backups: manifests.len() as u64,
            ..Default::default()
        };
        let packs: HashSet<Id> = self
            .store()
            .list("packs")
            .await?
            .iter()
            .filter_map(|o| Id::from_hex(o.key.rsplit('/').next()?))
            .collect();
        for manifest in manifests {
            self.verify_structure(manifest, &packs, &mut report).await?;
        }
        if read_data {
            let in_flight = self
                .store()
                .packs_in_flight(u64::from(self.config().pack_size));
            let mut checked = futures::stream::iter(packs)
                .map(|pack| async move { self.check_pack(pack).await })
                .buffer_unordered(in_flight);
            while let Some((bytes_read, problems)) = checked.try_next().await? {
                if let Some(bytes_read) = bytes_read {
                    report.packs_read += 1;
                    report.bytes_read += bytes_read;
                }
                for problem in problems {
                    report.problem(problem);
                }
            }
        }
        Ok(report)
    }

    async fn verify_structure(
        &self,
        manifest: &Manifest,
        packs: &HashSet<Id>,
        report: &mut VerifyReport,
    ) -> Result<(), RepoError> {
        let repo = self.clone();
        let (manifest, packs) = (manifest.clone(), packs.clone());
        let (count, problems) = tokio::task::spawn_blocking(move || {
            let mut seen = HashSet::new();
            let mut problems = Vec::new();
            let name = format!("{}/{}", manifest.meta.env, manifest.meta.name);
            let walked = for_each_chunk(&repo, &manifest, |part, id| {
                if !seen.insert(id) {
                    return Ok(());
                }
                match repo.catalog().chunk_location(&id)? {
                    None => problems.push(format!("backup {name} part {part}: chunk {id} is not in the index")),
                    Some(location) if !packs.contains(&location.pack) => problems.push(format!(
                        "backup {name} part {part}: chunk {} is in pack {}, which is missing from the store",
                        id.short(),
                        super::pack_key(&location.pack)
                    )),
                    Some(_) => {}
                }
                Ok(())
            });
            if let Err(e) = walked {
                problems.push(format!("backup {name}: {e}"));
            }
            (seen.len() as u64, problems)
        })
        .await
        .map_err(|e| RepoError::Pipeline(e.to_string()))?;
        report.chunks_referenced += count;
        for problem in problems {
            report.problem(problem);
        }
        Ok(())
    }

    /// Reads one pack and checks every chunk in it: the bytes read (None: pruned
    /// meanwhile) and the problems found.
    async fn check_pack(&self, pack: Id) -> Result<(Option<u64>, Vec<String>), RepoError> {
        let key = super::pack_key(&pack);
        let bytes = match self.store().get(&key).await {
            Ok(bytes) => bytes,
            Err(crate::store::StoreError::NotFound { .. }) => return Ok((None, Vec::new())),
            Err(e) => return Err(e.into()),
        };
        let bytes_read = bytes.len() as u64;
        let keys = self.keys().clone();
        let problems = tokio::task::spawn_blocking(move || {
            let mut problems = Vec::new();
            if Id::hash(&bytes)
                != Id::from_hex(key.rsplit('/').next().unwrap_or_default()).unwrap_or(Id([0; 32]))
            {
                problems.push(format!("pack {key}: contents do not match its name"));
            }
            match parse_pack(&keys, &bytes) {
                Err(e) => problems.push(format!("pack {key}: trailer: {e}")),
                Ok(entries) => {
                    for entry in entries {
                        let stored = &bytes[entry.offset as usize
                            ..(entry.offset + u64::from(entry.length)) as usize];
                        if let Err(e) = decode_blob(&keys, stored, &entry) {
                            problems.push(format!("pack {key}: chunk {}: {e}", entry.id));
                        }
                    }
                }
            }
            problems
        })
        .await
        .map_err(|e| RepoError::Pipeline(e.to_string()))?;
        Ok((Some(bytes_read), problems))
    }
}
