//! Why a config was refused: one line naming where the bad value came from (the
//! file, with a line number for syntax errors, or an `ENVSNAP_*` variable), the
//! dotted key and the problem. A failed load changes nothing, so the daemon shows
//! this line and keeps the config it had.

use std::fmt;
use std::path::PathBuf;

/// Where a bad value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOrigin {
    File(PathBuf),
    /// An `ENVSNAP_*` variable.
    Variable(String),
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigOrigin::File(path) => write!(f, "{}", path.display()),
            ConfigOrigin::Variable(name) => write!(f, "environment variable {name}"),
        }
    }
}

/// Why a config was refused. `Display` is one line naming the file or variable, the
/// key and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {message}", file.display())]
    Read { file: PathBuf, message: String },
    #[error("{}:{line}: TOML syntax error: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        message: String,
    },
    /// A key with a bad value, an unknown key, a missing key.
    #[error("{origin}: {key}: {problem}")]
    Invalid {
        origin: ConfigOrigin,
        key: String,
        problem: String,
    },
    /// An `ENVSNAP_*` variable that maps onto no key or holds a badly typed value.
    #[error("environment variable {variable}: {problem}")]
    Variable { variable: String, problem: String },
}
