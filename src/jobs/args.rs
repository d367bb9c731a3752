//! A job's arguments, stored with it in the catalog as JSON, read back by its kind.

use crate::context::Context;

/// The JSON arguments of job `id`, as `T`; `None` if missing or unreadable.
pub(super) async fn job_args<T: serde::de::DeserializeOwned>(ctx: &Context, id: i64) -> Option<T> {
    let text = ctx.catalog.blocking(move |c| c.job_args(id)).await.ok()??;
    serde_json::from_str(&text).ok()
}
