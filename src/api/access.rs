//! Who may make which request: the environment a request concerns, the right it
//! needs there, and the extra rights some requests need elsewhere.
//!
//! The right each request needs is one exhaustive table (`Request::action` in the
//! protocol). The environment is the request's own, except for job and drill
//! requests by id, which concern the job's (or drill's) environment (its rules decide who may see or cancel it), and a
//! restore from another environment or host, which also reads that source. Root, and
//! the user the daemon runs as, may do everything (`Caller::is_unrestricted`).
//! Every refusal is logged with the caller's user and uid.

use crate::config::Action;
use crate::context::Context;
use crate::control::peer::Caller;
use crate::control::protocol::{ErrorCode, Request};

use super::error::ApiError;

/// Refuses a request the caller has no right to make, with the reason.
pub async fn authorize(ctx: &Context, caller: &Caller, request: &Request) -> Result<(), ApiError> {
    if let Some(message) = restore_source_denied(ctx, caller, request) {
        return Err(denied(caller, message));
    }
    let action = request.action();
    let env = concerned_env(ctx, request).await;
    if !allowed(ctx, caller, action, env.as_deref()) {
        let target = env.map_or_else(String::new, |e| format!(" on environment {e}"));
        let message = format!("user {} may not {action}{target}", caller.user);
        return Err(denied(caller, message));
    }
    Ok(())
}

fn denied(caller: &Caller, message: String) -> ApiError {
    tracing::warn!(user = %caller.user, uid = caller.uid, "denied: {message}");
    ApiError::new(ErrorCode::Forbidden, message)
}

/// The environment whose rules decide: a job belongs to its environment.
async fn concerned_env(ctx: &Context, request: &Request) -> Option<String> {
    match request {
        Request::JobShow { id } | Request::JobWatch { id } | Request::JobCancel { id } => {
            let id = *id;
            ctx.catalog
                .blocking(move |c| c.get_job(id))
                .await
                .ok()
                .flatten()
                .and_then(|job| job.env)
        }
        Request::DrillShow { id } => {
            let (id, host) = (*id, ctx.repo.host().to_owned());
            ctx.catalog
                .blocking(move |c| c.get_drill(&host, id))
                .await
                .ok()
                .flatten()
                .map(|drill| drill.env)
        }
        other => other.env().map(str::to_owned),
    }
}

/// Restoring another environment's backup reads its data: the caller needs the
/// `download` right there; another host's backups need the global `restore` right.
fn restore_source_denied(ctx: &Context, caller: &Caller, request: &Request) -> Option<String> {
    let Request::Restore {
        env,
        from: Some(from),
        ..
    } = request
    else {
        return None;
    };
    match from.split_once('/') {
        Some(_) if !allowed(ctx, caller, Action::Restore, None) => Some(format!(
            "user {} may not restore backups of other hosts ({from})",
            caller.user
        )),
        None if from != env && !allowed(ctx, caller, Action::Download, Some(from)) => {
            Some(format!(
                "user {} may not download on environment {from}, so may not restore its backups",
                caller.user
            ))
        }
        _ => None,
    }
}

/// Whether the caller has `action` on `env` (or globally, for `None`).
pub fn allowed(ctx: &Context, caller: &Caller, action: Action, env: Option<&str>) -> bool {
    caller.is_unrestricted()
        || ctx
            .config()
            .access_for(env)
            .allows(action, &caller.user, &caller.groups)
}

/// Whether the caller may see what concerns `env` (lists that span environments
/// show each caller only the environments it may read).
pub fn may_read(ctx: &Context, caller: &Caller, env: Option<&str>) -> bool {
    allowed(ctx, caller, Action::Read, env)
}

/// Refuses an environment the config does not have.
pub fn known_env(ctx: &Context, env: &str) -> Result<(), ApiError> {
    if ctx.config().env(env).is_none() {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("unknown environment {env:?}"),
        ));
    }
    Ok(())
}
