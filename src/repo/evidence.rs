//! Evidence of restore drills, kept in the store next to the backups they drilled.
//!
//! A drill's report is sealed JSON (like a manifest) at
//! `drills/<env>/<backup id>/<drill id>`, under the host's prefix. The store keeps it
//! when the host is lost, `catalog rebuild` reads every one back, and prune deletes
//! a backup's reports with its manifest. The engine does not read the report: it is
//! the drill's business (`drill::report`).

use bytes::Bytes;

use super::manifest::Manifest;
use super::{RepoError, Repository, checked_name};
use crate::store::StoreError;

/// A drill report is a few KiB; anything far larger is not one.
const MAX_REPORT: u64 = 16 << 20;

/// Where the report of drill `drill` of the backup `manifest` lives.
pub fn report_key(manifest: &Manifest, drill: i64) -> String {
    report_key_of(&manifest.meta.env, &manifest.id, drill)
}

/// Where the report of drill `drill` of the backup `backup_id` of `env` lives.
pub fn report_key_of(env: &str, backup_id: &str, drill: i64) -> String {
    format!("{}/{drill:012}", reports_dir(env, backup_id))
}

fn reports_dir(env: &str, backup_id: &str) -> String {
    format!("drills/{env}/{backup_id}")
}

impl Repository {
    /// Stores a drill's report (JSON) next to the backup it drilled.
    pub async fn put_drill_report(
        &self,
        manifest: &Manifest,
        drill: i64,
        report: Vec<u8>,
    ) -> Result<(), RepoError> {
        checked_name(&manifest.meta.env)?;
        checked_name(&manifest.id)?;
        let sealed = self.keys().seal(report);
        // Locked as long as the backup it is about (Object Lock).
        self.store_retaining(self.backup_retention(manifest))
            .put(&report_key(manifest, drill), Bytes::from(sealed))
            .await?;
        Ok(())
    }

    /// Every drill report of this host (its key and JSON), for `catalog rebuild`. A
    /// report that cannot be opened is skipped with a warning: evidence is not data.
    pub async fn list_drill_reports(&self) -> Result<Vec<(String, Vec<u8>)>, RepoError> {
        let mut reports = Vec::new();
        for object in self.store().list("drills").await? {
            if object.size > MAX_REPORT {
                tracing::warn!(object = %object.key, size = object.size, "drill report too large; skipped");
                continue;
            }
            let raw = match self.store().get(&object.key).await {
                Ok(raw) => raw,
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            match self.keys().open(&raw) {
                Ok(plain) => reports.push((object.key.clone(), plain)),
                Err(_) => {
                    tracing::warn!(object = %object.key, "drill report cannot be opened; skipped")
                }
            }
        }
        Ok(reports)
    }

    /// Deletes the drill reports of a backup (prune, after its manifest).
    pub(super) async fn delete_drill_reports(&self, manifest: &Manifest) -> Result<(), RepoError> {
        let dir = reports_dir(
            checked_name(&manifest.meta.env)?,
            checked_name(&manifest.id)?,
        );
        for object in self.store().list(&dir).await? {
            self.store().delete(&object.key).await?;
        }
        Ok(())
    }
}
