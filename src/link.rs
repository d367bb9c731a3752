//! Temporary links: one part of a backup, exported into the store as the file a
//! download gives, and shared as a signed URL that expires.
//!
//! Only stores that sign URLs (S3, GCS, Azure) can give links; a local directory store
//! says so and points to `backup download`. The export object lives under the host's
//! `exports/` prefix, is recorded in the catalog before its upload starts, and is
//! deleted when its link expires ([`sweep`]), also after a crash or restart. The URL
//! itself is signed by the store's credentials and never logged.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::context::Context;
use crate::download::{DownloadError, Downloaded, Format};
use crate::repo::Repository;
use crate::repo::manifest::Manifest;

/// A link's lifetime unless asked otherwise, and the longest allowed.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);
pub const MAX_TTL: Duration = Duration::from_secs(60 * 60);
/// How long an export's upload may take before a sweep may delete it.
const UPLOAD_GRACE: Duration = Duration::from_secs(6 * 60 * 60);
/// How soon a failed deletion of an expired export is tried again.
const RETRY: Duration = Duration::from_secs(60);

/// What `backup link` answers.
#[derive(Debug, Serialize)]
pub struct Linked {
    #[serde(flatten)]
    pub export: Downloaded,
    pub url: String,
    pub expires: DateTime<Utc>,
}

/// What links and their sweeper work with: where exports are recorded and stored,
/// and the signal that a new one was made.
#[derive(Clone)]
pub struct Exports {
    pub catalog: Catalog,
    pub repo: Repository,
    pub clock: Clock,
    /// Notified when an export is recorded, so the sweeper sees its expiry.
    pub changed: Arc<Notify>,
    /// The store's URL as configured, for messages (shown redacted).
    pub store_url: String,
}

impl Exports {
    pub fn of(ctx: &Context) -> Self {
        Exports {
            catalog: ctx.catalog.clone(),
            repo: ctx.repo.clone(),
            clock: ctx.clock.clone(),
            changed: ctx.exports_changed.clone(),
            store_url: ctx.config().store.url.clone(),
        }
    }
}

/// Exports `part` of `manifest` in `format` and signs a URL to it valid for `ttl`.
pub async fn create(
    exports: &Exports,
    manifest: &Manifest,
    part: &str,
    format: Format,
    ttl: Duration,
) -> Result<Linked, DownloadError> {
    let store = exports.repo.store();
    if !store.can_sign() {
        return Err(DownloadError::Invalid(format!(
            "store {} cannot sign URLs (S3, GCS and Azure stores can); use backup download",
            crate::store::redact_url(&exports.store_url)
        )));
    }
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(DownloadError::Invalid(format!(
            "a link lasts from 1 second to 1 hour, not {}s",
            ttl.as_secs()
        )));
    }
    let key = export_key(manifest, part, format);
    // Until its URL is signed, the export is kept at least for the longest upload a
    // sweep must not cut short; then its expiry becomes the link's.
    let provisional =
        exports.clock.now() + chrono::Duration::from_std(UPLOAD_GRACE + ttl).expect("hours");
    let recorded = key.clone();
    exports
        .catalog
        .blocking(move |c| c.add_export(&recorded, provisional))
        .await
        .map_err(|e| DownloadError::Invalid(format!("recording the export: {e}")))?;
    exports.changed.notify_one();
    let exported = async {
        let (bytes, mut writer) =
            crate::download::write_part(&exports.repo, manifest, part, format, store.writer(&key))
                .await?;
        writer.shutdown().await.map_err(DownloadError::Output)?;
        let expires =
            exports.clock.now() + chrono::Duration::from_std(ttl).expect("at most an hour");
        let url = store
            .signed_get_url(&key, ttl)
            .await
            .map_err(|e| DownloadError::Output(std::io::Error::other(e)))?;
        let recorded = key.clone();
        exports
            .catalog
            .blocking(move |c| c.set_export_expiry(&recorded, expires))
            .await
            .map_err(|e| DownloadError::Invalid(format!("recording the export: {e}")))?;
        exports.changed.notify_one();
        Ok::<_, DownloadError>((bytes, url, expires))
    }
    .await;
    let (bytes, url, expires) = match exported {
        Ok(done) => done,
        Err(e) => {
            // Gone now rather than at its expiry; the sweep retries if this fails.
            if delete_export(exports, &key).await.is_ok() {
                let key = key.clone();
                let _ = exports
                    .catalog
                    .blocking(move |c| c.remove_export(&key))
                    .await;
            }
            return Err(e);
        }
    };
    Ok(Linked {
        export: Downloaded::of(manifest, part, format, bytes),
        url,
        expires,
    })
}

/// `exports/RANDOM/ENV-BACKUP-PART.EXT`: unguessable, and a file name that says what
/// it is when the link is opened.
fn export_key(manifest: &Manifest, part: &str, format: Format) -> String {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).expect("the operating system's random source failed");
    let extension = match format {
        Format::Tar => "tar",
        Format::TarZst => "tar.zst",
        Format::Native => match manifest.part(part).map(|p| p.format.as_str()) {
            Some("postgres-custom") => "dump",
            Some("sqlite") => "db",
            Some("redis-rdb") => "rdb",
            Some("mariadb-sql" | "postgres-roles-sql") => "sql",
            _ => "bin",
        },
    };
    let name: String = format!("{}-{}-{part}", manifest.meta.env, manifest.meta.name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("exports/{}/{name}.{extension}", hex::encode(random))
}

async fn delete_export(exports: &Exports, key: &str) -> Result<(), crate::store::StoreError> {
    match exports.repo.store().delete(key).await {
        Err(crate::store::StoreError::NotFound { .. }) => Ok(()),
        other => other,
    }
}

/// Deletes export objects whose links have expired, at each expiry, until shutdown.
pub async fn sweep(exports: Exports, shutdown: CancellationToken) {
    loop {
        let now = exports.clock.now();
        let expired = exports
            .catalog
            .blocking(move |c| c.expired_exports(now))
            .await;
        let mut failed = false;
        for key in expired.unwrap_or_default() {
            match delete_export(&exports, &key).await {
                Ok(()) => {
                    let key = key.clone();
                    let removed = exports
                        .catalog
                        .blocking(move |c| c.remove_export(&key))
                        .await;
                    failed |= removed.is_err();
                }
                Err(e) => {
                    failed = true;
                    tracing::warn!(key = %key, error = %e, "cannot delete an expired export; retrying in a minute");
                }
            }
        }
        let next = exports.catalog.blocking(|c| c.next_export_expiry()).await;
        let wait = match (failed, next.ok().flatten()) {
            (true, _) => RETRY,
            (false, Some(at)) => (at - exports.clock.now()).to_std().unwrap_or_default(),
            (false, None) => MAX_TTL,
        };
        tokio::select! {
            () = tokio::time::sleep(wait.min(MAX_TTL)) => {}
            () = exports.changed.notified() => {}
            () = shutdown.cancelled() => return,
        }
    }
}
