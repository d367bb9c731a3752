//! Loading a config: read the file, map the process's `ENVSNAP_*` variables onto
//! keys ([`super::overrides`]), then parse and check the whole ([`super::validate`]).
//! Nothing is kept from a failed load.

use std::path::Path;

use super::error::ConfigError;
use super::schema::Config;
use super::{overrides, validate};

impl Config {
    /// Reads `path` and applies the process's `ENVSNAP_*` overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut vars = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().filter(|n| n.starts_with("ENVSNAP_")) else {
                continue;
            };
            let value = value.into_string().map_err(|_| ConfigError::Variable {
                variable: name.to_owned(),
                problem: "the value is not valid UTF-8".to_owned(),
            })?;
            vars.push((name.to_owned(), value));
        }
        Config::load_with_vars(path, vars)
    }

    /// [`Config::load`] with the given variables in place of the process
    /// environment (name, value pairs; names not starting with `ENVSNAP_` are
    /// ignored).
    pub fn load_with_vars(
        path: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let overrides = overrides::overrides_from_vars(vars)?;
        validate::parse(&text, path, &overrides)
    }

    /// Parses `text` as if read from `origin`, without environment overrides.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        validate::parse(text, origin, &[])
    }
}
