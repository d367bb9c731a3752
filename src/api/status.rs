//! Status and environments: `status`, `reload`, `env list`, `env show`, `log`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use super::access::may_read;
use super::call::Call;
use super::error::{ApiError, Outcome, to_value};
use crate::context::Context;
use crate::control::protocol::ErrorCode;

/// How long `env list` waits for one environment's version command.
const VERSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The most activity entries one `log` answers unless asked otherwise.
const DEFAULT_LIMIT: u32 = 1000;

pub async fn status(call: &Call<'_>) -> Outcome {
    let ctx = call.ctx;
    let config = ctx.config();
    let store = ctx.repo.check_store().await;
    let jobs = ctx.catalog.blocking(|c| c.job_counts()).await?;
    to_value(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "host": config.daemon.host,
        "uptime_seconds": ctx.uptime().as_secs(),
        "store": { "url": crate::store::redact_url(&config.store.url), "reachable": store.is_ok(), "error": store.err().map(|e| e.to_string()) },
        "jobs": { "queued": jobs.queued, "running": jobs.running },
        "environments": config.environments.len(),
    }))
}

#[derive(Serialize)]
struct EnvView {
    name: String,
    status: String,
    version: Option<String>,
    last_error: Option<String>,
    last_backup: Option<String>,
    last_backup_at: Option<DateTime<Utc>>,
    next_run: Option<DateTime<Utc>>,
    parts: Vec<String>,
    safety_backup: Option<String>,
    /// The newest drill's outcome (`passed`, `failed`) and when it finished.
    last_drill: Option<String>,
    last_drill_at: Option<DateTime<Utc>>,
}

async fn env_view(ctx: &Context, name: &str) -> Result<EnvView, ApiError> {
    let config = ctx.config();
    let env = config.env(name).ok_or_else(|| {
        ApiError::new(ErrorCode::NotFound, format!("unknown environment {name:?}"))
    })?;
    let owned = name.to_owned();
    let (state, last, drill) = ctx
        .catalog
        .blocking(move |c| {
            Ok((
                c.env_state(&owned)?,
                c.last_backup(&owned)?,
                c.last_drill(&owned)?,
            ))
        })
        .await?;
    Ok(EnvView {
        name: name.to_owned(),
        status: state.status,
        version: env.version.read(VERSION_TIMEOUT).await.ok(),
        last_error: state.last_error,
        last_backup: last.as_ref().map(|b| b.name.clone()),
        last_backup_at: last.and_then(|b| b.completed),
        next_run: crate::schedule::next_of(&env.schedule, config.daemon.timezone, ctx.clock.now()),
        parts: env.parts().into_iter().map(|p| p.name).collect(),
        safety_backup: state.safety_backup,
        last_drill: drill.as_ref().map(|d| d.outcome.clone()),
        last_drill_at: drill.map(|d| d.finished),
    })
}

pub fn reload(call: &Call<'_>) -> Outcome {
    let config = call
        .ctx
        .reload()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    to_value(json!({ "reloaded": true, "environments": config.environments.len() }))
}

pub async fn env_list(call: &Call<'_>) -> Outcome {
    let names: Vec<String> = call.ctx.config().environments.keys().cloned().collect();
    let mut views = Vec::new();
    for name in names {
        views.push(env_view(call.ctx, &name).await?);
    }
    to_value(views)
}

pub async fn env_show(call: &Call<'_>, env: &str) -> Outcome {
    to_value(env_view(call.ctx, env).await?)
}

/// The activity log, showing each caller only the environments it may read.
pub async fn log(
    call: &Call<'_>,
    env: Option<String>,
    since: Option<DateTime<Utc>>,
    limit: Option<u32>,
) -> Outcome {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    let entries = call
        .ctx
        .catalog
        .blocking(move |c| c.list_activity(env.as_deref(), since, limit))
        .await?;
    to_value(
        entries
            .into_iter()
            .filter(|e| may_read(call.ctx, call.caller, e.env.as_deref()))
            .collect::<Vec<_>>(),
    )
}
