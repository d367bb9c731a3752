//! The fleet: `fleet list`, `fleet show HOST`, `fleet forget HOST`.
//!
//! Read from the store alone (`fleet/`), never from other hosts' catalogs, so a host
//! that is down is listed as its status and backups left it. Listing and showing are
//! `read` requests; retiring a host (and deleting its backups) needs the global
//! `restore` right, like other daemon-wide changes.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use super::call::Call;
use super::error::{ApiError, Outcome, to_value};
use crate::catalog::ActivityEntry;
use crate::context::Context;
use crate::control::protocol::ErrorCode;
use crate::fleet::view::{self, HostView, Rules};
use crate::repo::RepoError;
use crate::repo::status as objects;

/// One backup of a host, as `fleet show` lists it (read from its manifest).
#[derive(Debug, Serialize)]
struct FleetBackup {
    env: String,
    name: String,
    id: String,
    created: DateTime<Utc>,
    completed: DateTime<Utc>,
    version: String,
    trigger: String,
    /// Logical bytes of all parts.
    size: u64,
    expires: Option<DateTime<Utc>>,
}

pub async fn list(call: &Call<'_>) -> Outcome {
    let ctx = call.ctx;
    let hosts = view::read(ctx.store_root(), ctx.keys(), rules(ctx)).await?;
    to_value(hosts)
}

pub async fn show(call: &Call<'_>, host: String) -> Outcome {
    let ctx = call.ctx;
    let view = host_view(ctx, &host).await?;
    let backups = match ctx.host_repo(&host).await {
        Ok(repo) => repo.list_manifests(None).await?,
        Err(RepoError::NoRepository { .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let backups: Vec<FleetBackup> = backups
        .into_iter()
        .rev()
        .map(|m| FleetBackup {
            size: m.parts.iter().map(|p| p.size).sum(),
            env: m.meta.env,
            name: m.meta.name,
            id: m.id,
            created: m.created,
            completed: m.completed,
            version: m.meta.version,
            trigger: m.meta.trigger,
            expires: m.meta.expires,
        })
        .collect();
    to_value(json!({ "host": view, "backups": backups }))
}

/// Retires `host` (it stops alarming); with `delete_backups`, also deletes everything
/// under its prefix, which is refused while its heartbeat is fresh.
pub async fn forget(call: &Call<'_>, host: String, delete_backups: bool) -> Outcome {
    let (ctx, caller) = (call.ctx, call.caller);
    if host == ctx.repo.host() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("{host} is this host: a daemon cannot forget itself"),
        ));
    }
    let view = host_view(ctx, &host).await?;
    if delete_backups && !view.stale && !view.retired {
        let age = view.heartbeat_age_seconds.unwrap_or_default();
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "host {host} wrote its status {age} s ago: stop its daemon before deleting its backups"
            ),
        ));
    }
    let mark = json!({ "by": caller.user, "from": ctx.repo.host(), "time": ctx.clock.now() });
    objects::retire_host(ctx.store_root(), &host, mark.to_string().into_bytes()).await?;
    let deleted = match delete_backups {
        true => objects::delete_host(ctx.store_root(), &host).await?,
        false => 0,
    };
    let detail = match delete_backups {
        true => format!("retired {host}, {deleted} objects deleted"),
        false => format!("retired {host}, backups kept"),
    };
    let entry = ActivityEntry::now(
        &caller.user,
        None,
        "fleet-forget",
        None,
        "succeeded",
        Some(detail),
    );
    ctx.catalog
        .blocking(move |c| c.add_activity(&entry))
        .await?;
    tracing::warn!(host = %host, deleted, user = %caller.user, "fleet: host retired");
    to_value(json!({ "host": host, "retired": true, "objects_deleted": deleted }))
}

fn rules(ctx: &Context) -> Rules {
    Rules {
        now: ctx.clock.now(),
        stale_after: ctx.config().fleet.stale_after,
    }
}

/// One host's view; `not-found` when the store has nothing of it.
async fn host_view(ctx: &Context, host: &str) -> Result<HostView, ApiError> {
    if !crate::repo::manifest::is_safe_name(host) {
        return Err(ApiError::invalid(format!(
            "{:?} is not a host name",
            crate::message::one_line(host)
        )));
    }
    // With Object Lock, another host is read as envsnap wrote it (`Context::host_root`).
    let root = &ctx.host_root(host).await?;
    let (listed, retired, hosts) = tokio::try_join!(
        objects::list_manifests(root, host),
        objects::retired_hosts(root),
        objects::list_hosts(root),
    )?;
    let (status, error) = view::decode(host, objects::read_status(root, host, ctx.keys()).await);
    let known = hosts.iter().any(|h| h == host);
    if !known {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no host {host} in the store"),
        ));
    }
    let retired_at = retired
        .into_iter()
        .find(|(h, _)| h == host)
        .map(|(_, at)| at);
    Ok(view::host_view(
        host,
        status.as_ref(),
        error,
        Some(&listed),
        retired_at,
        rules(ctx),
    ))
}
