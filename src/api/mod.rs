//! The API: what each control request means and does, one file per area.
//!
//! The control server ([`crate::control::server`]) frames messages and identifies
//! the caller; [`Api`] is the [`Service`] it serves. For each request it first
//! decides whether the caller may make it ([`access`]) and whether it can be served
//! at all (an import's files are not asked for when its parts are wrong), then runs
//! the handler of the request's area:
//!
//! - [`status`]: daemon status, reload, environments, the activity log;
//! - [`backups`]: create, list, show, keep, delete;
//! - [`exports`]: downloads and links of one part;
//! - [`import`]: archives made elsewhere, queued as an import job;
//! - [`restore`]: pre-checks, part mapping, the dry-run plan, the restore job;
//! - [`drills`]: restore drills: run one, list them, show a report;
//! - [`jobs`]: list, show, watch, cancel;
//! - [`maintenance`]: verify, prune, catalog rebuild.
//!
//! Handlers check their arguments before anything changes (unknown environment,
//! invalid or duplicate name, ...) and answer with a stable error code and a one-line
//! message ([`error`]). Long requests (`--wait`, `job watch`) send progress through
//! `replies`. A new request gets a variant in `control::protocol::Request` (with its
//! right in `Request::action`), a handler in its area's file, and one arm in
//! `Api::dispatch`.

pub mod access;
pub mod backups;
pub mod call;
pub mod drills;
pub mod error;
pub mod exports;
pub mod fleet;
pub mod import;
pub mod jobs;
pub mod maintenance;
pub mod restore;
pub mod status;
#[cfg(test)]
mod tests;

use std::os::fd::OwnedFd;
use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::context::Context;
use crate::control::peer::Caller;
use crate::control::protocol::{ErrorReply, Reply, Request};
use crate::control::server::Service;
use call::Call;
use error::{ApiError, Outcome};

/// The daemon's requests served from a context.
pub struct Api {
    ctx: Arc<Context>,
}

impl Api {
    pub fn new(ctx: Arc<Context>) -> Self {
        Api { ctx }
    }

    /// Access first, then the checks that need none of the request's files.
    pub async fn admit(&self, caller: &Caller, request: &Request) -> Result<(), ApiError> {
        access::authorize(&self.ctx, caller, request).await?;
        // The command and environment only: arguments may carry credentials (a signed URL).
        tracing::debug!(user = %caller.user, command = request.name(), env = request.env(), "request");
        // A request its files cannot save is refused before they are asked for.
        if let Request::Import {
            env,
            parts,
            urls,
            version,
            ..
        } = request
        {
            import::check_import(&self.ctx, env, parts, urls, version.as_deref())?;
        }
        Ok(())
    }

    /// Runs an admitted request.
    pub async fn handle(
        &self,
        caller: &Caller,
        request: Request,
        files: Vec<OwnedFd>,
        replies: &mpsc::Sender<Reply>,
    ) -> Outcome {
        if let Some(env) = request.env()
            && !matches!(request, Request::Log { .. })
        {
            access::known_env(&self.ctx, env)?;
        }
        let call = Call {
            ctx: &self.ctx,
            caller,
            replies,
        };
        Self::dispatch(&call, request, files).await
    }

    /// Which handler serves which request.
    async fn dispatch(call: &Call<'_>, request: Request, files: Vec<OwnedFd>) -> Outcome {
        use Request as R;
        match request {
            R::Status => status::status(call).await,
            R::Reload => status::reload(call),
            R::EnvList => status::env_list(call).await,
            R::EnvShow { env } => status::env_show(call, &env).await,
            R::Log { env, since, limit } => status::log(call, env, since, limit).await,
            R::BackupCreate {
                env,
                name,
                wait,
                keep_until,
            } => backups::create(call, backups::BackupAsk::new(env, name, keep_until), wait).await,
            R::BackupList { env } => backups::list(call, env).await,
            R::BackupShow { env, backup } => backups::show(call, &env, &backup).await,
            R::BackupKeep { env, backup, until } => backups::keep(call, env, backup, until).await,
            R::BackupDelete { env, backup } => backups::delete(call, env, backup).await,
            R::BackupDownload {
                env,
                backup,
                part,
                format,
            } => {
                exports::download(
                    call,
                    exports::PartExport::new(&env, &backup, &part, format.as_deref()),
                    files,
                )
                .await
            }
            R::BackupLink {
                env,
                backup,
                part,
                format,
                ttl_seconds,
            } => {
                exports::link(
                    call,
                    exports::PartExport::new(&env, &backup, &part, format.as_deref()),
                    ttl_seconds,
                )
                .await
            }
            R::Import {
                env,
                parts,
                urls,
                name,
                version,
                wait,
                keep_setuid,
            } => {
                import::import(
                    call,
                    import::ImportAsk {
                        env,
                        parts,
                        urls,
                        name,
                        version,
                        keep_setuid,
                    },
                    files,
                    wait,
                )
                .await
            }
            R::Restore {
                env,
                backup,
                from,
                map,
                wait,
                no_safety_backup,
                dry_run,
            } => {
                restore::restore(
                    call,
                    restore::RestoreAsk {
                        env,
                        backup,
                        from,
                        map,
                        safety_backup: !no_safety_backup,
                    },
                    wait,
                    dry_run,
                )
                .await
            }
            R::Drill {
                env,
                backup,
                wait,
                keep,
            } => drills::create(call, drills::DrillAsk { env, backup, keep }, wait).await,
            R::DrillList { env } => drills::list(call, env).await,
            R::DrillShow { id } => drills::show(call, id).await,
            R::FleetList => fleet::list(call).await,
            R::FleetShow { host } => fleet::show(call, host).await,
            R::FleetForget {
                host,
                delete_backups,
            } => fleet::forget(call, host, delete_backups).await,
            R::JobList => jobs::list(call).await,
            R::JobShow { id } => jobs::show(call, id).await,
            R::JobWatch { id } => jobs::watch(call, id).await,
            R::JobCancel { id } => jobs::cancel(call, id).await,
            R::Verify {
                env,
                backup,
                read_data,
            } => maintenance::verify(call, env, backup, read_data).await,
            R::Prune { dry_run } => maintenance::prune(call, dry_run).await,
            R::CatalogRebuild => maintenance::catalog_rebuild(call).await,
        }
    }
}

impl Service for Api {
    async fn admit(&self, caller: &Caller, request: &Request) -> Result<(), ErrorReply> {
        Api::admit(self, caller, request).await.map_err(Into::into)
    }

    async fn handle(
        &self,
        caller: Caller,
        request: Request,
        files: Vec<OwnedFd>,
        replies: mpsc::Sender<Reply>,
    ) -> Result<Box<RawValue>, ErrorReply> {
        Api::handle(self, &caller, request, files, &replies)
            .await
            .map_err(Into::into)
    }
}
