//! Maintenance: `verify` (the store holds what the backups need), `prune` (retention
//! applied now, or planned with `--dry-run`) and `catalog rebuild` (backups and drill
//! reports back from the store).

use super::call::Call;
use super::error::{ApiError, Outcome, to_value};
use crate::catalog::{BackupRecord, DrillRecord};
use crate::control::protocol::ErrorCode;
use crate::drill::report::{FAILED, PASSED, Report};
use crate::repo::evidence::report_key_of;

/// Drill ids are job ids: far below this.
const MAX_DRILL_ID: i64 = 1 << 53;
use crate::jobs::prune::Pruner;

pub async fn prune(call: &Call<'_>, dry_run: bool) -> Outcome {
    let pruner = Pruner::of(call.ctx);
    to_value(pruner.prune(&call.caller.user, dry_run).await?)
}

pub async fn verify(
    call: &Call<'_>,
    env: String,
    backup: Option<String>,
    read_data: bool,
) -> Outcome {
    let ctx = call.ctx;
    let mut manifests = Vec::new();
    let env_c = env.clone();
    let backups = ctx
        .catalog
        .blocking(move |c| c.list_backups(&env_c))
        .await?;
    for record in backups
        .iter()
        .filter(|b| backup.as_deref().is_none_or(|n| n == b.name))
    {
        if let Some(id) = record.manifest.as_deref() {
            manifests.push(ctx.repo.load_manifest(&env, id).await?);
        }
    }
    if let Some(name) = &backup
        && manifests.is_empty()
    {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("environment {env} has no completed backup {name:?}"),
        ));
    }
    to_value(ctx.repo.verify(&manifests, read_data).await?)
}

/// Re-reads the store's index objects, manifests and drill reports into the catalog
/// (under Object Lock, after restoring what an intruder overwrote or deleted).
pub async fn catalog_rebuild(call: &Call<'_>) -> Outcome {
    let ctx = call.ctx;
    // With Object Lock, first whatever was written over or deleted is put back.
    let restored = match ctx.store_root().lock_policy() {
        Some(_) => {
            let host = ctx.repo.host();
            let now = ctx.clock.now();
            let restored = ctx.store_root().restore_original_versions(host, now).await;
            restored.map_err(crate::repo::RepoError::from)?
        }
        None => 0,
    };
    let report = ctx.repo.rebuild_index().await?;
    let manifests = ctx.repo.list_manifests(None).await?;
    let records: Vec<_> = manifests.iter().map(BackupRecord::from_manifest).collect();
    let drills = drill_records(ctx.repo.host(), &ctx.repo.list_drill_reports().await?);
    let drills_found = drills.len();
    ctx.catalog
        .blocking(move |c| {
            for record in &records {
                c.upsert_completed_backup(record)?;
            }
            for drill in &drills {
                c.record_drill(drill)?;
            }
            Ok(())
        })
        .await?;
    let mut report = serde_json::to_value(report)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    report["drills"] = drills_found.into();
    report["restored_originals"] = restored.into();
    to_value(report)
}

/// The catalog's records of drill reports read from the store: each must be this
/// host's, stored under the key its own fields name, with a plain outcome and id
/// (others are skipped with a warning).
fn drill_records(host: &str, reports: &[(String, Vec<u8>)]) -> Vec<DrillRecord> {
    reports
        .iter()
        .filter_map(|(key, raw)| {
            let report = serde_json::from_slice::<Report>(raw).ok()?.checked()?;
            let genuine = report.host == host
                && (1..=MAX_DRILL_ID).contains(&report.id)
                && [PASSED, FAILED].contains(&report.outcome.as_str())
                && *key == report_key_of(&report.env, &report.manifest, report.id);
            match genuine {
                true => Some(report.to_record()),
                false => {
                    tracing::warn!(object = %key, "a drill report in the store does not match its key; skipped");
                    None
                }
            }
        })
        .collect()
}
