//! Every way an `envsnapctl` command fails, as one [`CliError`] that the binary
//! prints as one line: transport and daemon errors, a result this client cannot
//! read, a command that cannot run as given, and results that are themselves
//! failures (`verify` with problems, a watched job that failed).

use crate::control::client::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("envsnapd sent a result this client does not understand: {0}")]
    UnexpectedResult(#[from] serde_json::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A command that cannot run as given.
    #[error("{0}")]
    Usage(String),
    /// A destructive command was not confirmed.
    #[error("{0}")]
    NotConfirmed(String),
    #[error("verify found {0} problem{s}", s = if *.0 == 1 { "" } else { "s" })]
    VerifyProblems(usize),
    #[error("job {id} {state}{}", error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    JobUnsuccessful {
        id: i64,
        state: String,
        error: Option<String>,
    },
}
