//! One request being served: what every handler receives.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::context::Context;
use crate::control::peer::Caller;
use crate::control::protocol::Reply;

/// The context, who asks, and where progress lines go.
pub struct Call<'a> {
    pub ctx: &'a Arc<Context>,
    pub caller: &'a Caller,
    pub replies: &'a mpsc::Sender<Reply>,
}
