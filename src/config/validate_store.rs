//! `[store]`: where backups go, and how the daemon talks to it (requests, limits,
//! Object Lock).

use std::time::Duration;

use super::defaults::{DEFAULT_COMPRESSION, default_store_url, default_transfer};
use super::error::ConfigError;
use super::origin::{Ctx, absolute};
use super::raw::{OneOrMany, RawLock, RawStore};
use super::schema::{DaemonConfig, StoreConfig};
use super::values::parse_duration;
use crate::store::limit::RateSchedule;
use crate::store::{LockMode, LockPolicy, TransferSettings};

/// The schemes `store::Store::from_url` understands (object_store's `parse_url`).
const STORE_SCHEMES: [&str; 12] = [
    "file", "memory", "s3", "s3a", "gs", "az", "azure", "adl", "abfs", "abfss", "http", "https",
];

pub(super) fn store(
    raw: RawStore,
    daemon: &DaemonConfig,
    ctx: &Ctx,
) -> Result<StoreConfig, ConfigError> {
    let transfer = transfer(&raw, daemon.timezone, ctx)?;
    let url = match raw.url {
        None => default_store_url(&daemon.state_dir),
        Some(url) => {
            check_store_url(&url).map_err(|p| ctx.error("store.url", p))?;
            url
        }
    };
    let key_file = match raw.key_file {
        None => None,
        Some(path) => Some(absolute(path, "store.key_file", ctx)?),
    };
    let compression = match raw.compression {
        None => DEFAULT_COMPRESSION,
        Some(level @ 1..=19) => level as i32,
        Some(level) => {
            return Err(ctx.error(
                "store.compression",
                format!("must be a zstd level from 1 to 19, got {level}"),
            ));
        }
    };
    let lock = match raw.lock {
        None => None,
        Some(lock) => Some(lock_policy(lock, &url, ctx)?),
    };
    Ok(StoreConfig {
        url,
        key_file,
        compression,
        transfer,
        lock,
    })
}

/// `store.concurrency`, `retry_timeout`, `upload_limit` and `download_limit`.
fn transfer(
    raw: &RawStore,
    timezone: chrono_tz::Tz,
    ctx: &Ctx,
) -> Result<TransferSettings, ConfigError> {
    let mut settings = default_transfer(timezone);
    match raw.concurrency {
        None => {}
        Some(n @ 1..=64) => settings.concurrency = n as usize,
        Some(n) => {
            return Err(ctx.error(
                "store.concurrency",
                format!("must be from 1 to 64 requests in flight, got {n}"),
            ));
        }
    }
    if let Some(text) = &raw.retry_timeout {
        settings.retry_timeout =
            parse_duration(text).map_err(|p| ctx.error("store.retry_timeout", p))?;
    }
    let limit = |value: &Option<OneOrMany>, key: &str| match value {
        None => Ok(RateSchedule::default()),
        Some(rules) => {
            RateSchedule::parse(&rules.clone().into_vec()).map_err(|p| ctx.error(key, p))
        }
    };
    settings.upload_limit = limit(&raw.upload_limit, "store.upload_limit")?;
    settings.download_limit = limit(&raw.download_limit, "store.download_limit")?;
    Ok(settings)
}

fn check_store_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    let scheme = url.scheme();
    if !STORE_SCHEMES.contains(&scheme) {
        return Err(format!(
            "unsupported store scheme `{scheme}`: expected file, s3, gs, az (azure, abfs), memory or http(s)"
        ));
    }
    match scheme {
        "file" if url.to_file_path().is_err() => Err(format!(
            "`{text}` does not name an absolute local directory (file:///PATH)"
        )),
        "file" | "memory" => Ok(()),
        _ if url.host_str().is_none_or(str::is_empty) => Err(format!(
            "`{text}` names no bucket or container ({scheme}://BUCKET/PREFIX)"
        )),
        _ => Ok(()),
    }
}

/// `store.lock = { mode = "governance" | "compliance", extra = "1d" }`.
fn lock_policy(raw: RawLock, url: &str, ctx: &Ctx) -> Result<LockPolicy, ConfigError> {
    if !url.starts_with("s3://") && !url.starts_with("s3a://") {
        return Err(ctx.error(
            "store.lock",
            "needs an S3 store (store.url = \"s3://BUCKET/PREFIX\"): only S3 has Object Lock",
        ));
    }
    let mode = match raw.mode.as_deref() {
        None => {
            return Err(ctx.error(
                "store.lock.mode",
                "is required: \"governance\" or \"compliance\"",
            ));
        }
        Some(text) => text
            .parse::<LockMode>()
            .map_err(|e| ctx.error("store.lock.mode", e))?,
    };
    let extra = match raw.extra.as_deref() {
        None => DEFAULT_LOCK_EXTRA,
        Some(text) => parse_duration(text).map_err(|p| ctx.error("store.lock.extra", p))?,
    };
    if extra > MAX_LOCK_EXTRA {
        return Err(ctx.error(
            "store.lock.extra",
            "must be at most 3650d: a lock cannot be shortened",
        ));
    }
    Ok(LockPolicy { mode, extra })
}

/// How much longer than its backup an object stays locked by default.
const DEFAULT_LOCK_EXTRA: Duration = Duration::from_secs(24 * 3600);
const MAX_LOCK_EXTRA: Duration = Duration::from_secs(3650 * 24 * 3600);
