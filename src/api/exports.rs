//! Exports of one part: `backup download` (into a file the client passed) and
//! `backup link` (into the store, shared as a signed URL). Both are logged in the
//! activity log with their outcome.

use std::os::fd::OwnedFd;
use std::time::Duration;

use super::call::Call;
use super::error::{ApiError, Outcome, to_value};
use super::restore::find_restorable;
use crate::catalog::ActivityEntry;
use crate::context::Context;
use crate::control::peer::Caller;
use crate::control::protocol::ErrorCode;
use crate::download::{self, DownloadError, Format};
use crate::link::{self, Exports};
use crate::repo::manifest::Manifest;

/// One part of one backup, as a download or a link asks for it.
pub struct PartExport<'a> {
    env: &'a str,
    backup: &'a str,
    part: &'a str,
    format: Option<&'a str>,
}

impl<'a> PartExport<'a> {
    pub fn new(env: &'a str, backup: &'a str, part: &'a str, format: Option<&'a str>) -> Self {
        PartExport {
            env,
            backup,
            part,
            format,
        }
    }

    /// The backup's manifest and the format to write, checked.
    async fn resolve(&self, ctx: &Context) -> Result<(Manifest, Format), ApiError> {
        let manifest = find_restorable(ctx, &ctx.repo, None, self.env, self.backup).await?;
        let format = download::choose_format(&manifest, self.part, self.format)?;
        Ok((manifest, format))
    }

    /// Records the export in the activity log as `action`, with its outcome.
    async fn log<T>(
        &self,
        ctx: &Context,
        caller: &Caller,
        action: &str,
        result: &Result<T, DownloadError>,
        describe: impl FnOnce(&T) -> String,
    ) {
        let part = self.part;
        let (outcome, detail) = match result {
            Ok(done) => ("succeeded", format!("part {part}: {}", describe(done))),
            Err(e) => ("failed", format!("part {part}: {e}")),
        };
        let entry = ActivityEntry::now(
            &caller.user,
            Some(self.env),
            action,
            Some(self.backup),
            outcome,
            Some(detail),
        );
        let _ = ctx.catalog.blocking(move |c| c.add_activity(&entry)).await;
    }
}

/// Writes the part into the file the client passed.
pub async fn download(call: &Call<'_>, what: PartExport<'_>, mut files: Vec<OwnedFd>) -> Outcome {
    let (ctx, caller) = (call.ctx, call.caller);
    let file = files.pop().ok_or_else(|| {
        ApiError::new(ErrorCode::BadRequest, "a download needs the client's file")
    })?;
    let (manifest, format) = what.resolve(ctx).await?;
    let stall = ctx.config().daemon.stall_timeout;
    let downloaded = download::download(&ctx.repo, &manifest, what.part, format, file, stall).await;
    what.log(ctx, caller, "download", &downloaded, |done| {
        format!("{:?}, {} bytes", done.format, done.bytes)
    })
    .await;
    to_value(downloaded?)
}

/// Exports the part into the store and answers with a signed URL that expires.
pub async fn link(call: &Call<'_>, what: PartExport<'_>, ttl_seconds: Option<u64>) -> Outcome {
    let (ctx, caller) = (call.ctx, call.caller);
    let ttl = ttl_seconds.map_or(link::DEFAULT_TTL, Duration::from_secs);
    let (manifest, format) = what.resolve(ctx).await?;
    let linked = link::create(&Exports::of(ctx), &manifest, what.part, format, ttl).await;
    what.log(ctx, caller, "link", &linked, |link| {
        format!("expires {}", link.expires.to_rfc3339())
    })
    .await;
    to_value(linked?)
}
