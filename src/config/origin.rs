//! Where each key of a config came from, to name it in errors: the file, or the
//! `ENVSNAP_*` variable that set it (or set something beside it, which is why a key
//! the file lacks is missing). `validate` and `validate_db` report every problem
//! through [`Ctx::error`], so both say it in the same one-line form.

use std::path::{Path, PathBuf};

use super::error::{ConfigError, ConfigOrigin};
use super::overrides::Override;
use super::values::check_command;

/// Knows where each key came from, to name it in errors.
pub(super) struct Ctx<'a> {
    pub(super) file: &'a Path,
    pub(super) overrides: &'a [Override],
    /// The file as parsed, before any variable was merged over it.
    pub(super) table: toml::Table,
}

impl Ctx<'_> {
    pub(super) fn error(&self, key: &str, problem: impl AsRef<str>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin_of(key),
            key: if key.is_empty() {
                "(top level)".to_owned()
            } else {
                key.to_owned()
            },
            problem: one_line(problem.as_ref()),
        }
    }

    /// A variable set this key or one inside it (`environments.live.schedule[0]`
    /// comes from ENVSNAP_ENVIRONMENTS__LIVE__SCHEDULE), or the key's nearest
    /// ancestor missing from the file exists because a variable set something in it
    /// (`environments.staging.version` is missing because of
    /// ENVSNAP_ENVIRONMENTS__STAGING__RETENTION).
    fn origin_of(&self, key: &str) -> ConfigOrigin {
        let set_by = |o: &&Override| {
            key == o.key
                || key
                    .strip_prefix(o.key.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        };
        let variable = self.overrides.iter().find(set_by).or_else(|| {
            let plain = key.split('[').next().unwrap_or(key);
            let segments: Vec<&str> = plain.split('.').filter(|s| !s.is_empty()).collect();
            let missing = (1..=segments.len())
                .map(|n| segments[..n].join("."))
                .find(|ancestor| !self.file_has(ancestor))?;
            self.overrides.iter().find(|o| {
                o.key == missing
                    || o.key
                        .strip_prefix(missing.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            })
        });
        match variable {
            Some(o) => ConfigOrigin::Variable(o.variable.clone()),
            None => ConfigOrigin::File(self.file.to_path_buf()),
        }
    }

    fn file_has(&self, key: &str) -> bool {
        let mut table = &self.table;
        let mut segments = key.split('.').peekable();
        while let Some(segment) = segments.next() {
            match (table.get(segment), segments.peek()) {
                (Some(_), None) => return true,
                (Some(toml::Value::Table(inner)), Some(_)) => table = inner,
                _ => return false,
            }
        }
        false
    }

    pub(super) fn serde_error(
        &self,
        error: serde_path_to_error::Error<toml::de::Error>,
    ) -> ConfigError {
        let path = error.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = one_line(error.inner().message());
        // serde_path_to_error has usually recorded the offending key already.
        let join = |field: &str| {
            if path.is_empty() {
                field.to_owned()
            } else if path.rsplit('.').next() == Some(field) {
                path.clone()
            } else {
                format!("{path}.{field}")
            }
        };
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
            let expected = expected.trim_start_matches(", ");
            return self.error(&join(field), format!("unknown key ({expected})"));
        }
        if let Some(rest) = message.strip_prefix("missing field `") {
            let field = rest.split('`').next().unwrap_or(rest);
            return self.error(&join(field), "missing required key");
        }
        let problem = message
            .replace("invalid type:", "wrong type:")
            .replace("unknown variant", "unknown value")
            .replace("expected i64", "expected an integer")
            .replace("expected u16", "expected a port number 0-65535")
            .replace("expected a sequence", "expected a list")
            .replace("expected path string", "expected a path string");
        self.error(&path, problem)
    }
}

pub(super) fn absolute(path: PathBuf, key: &str, ctx: &Ctx) -> Result<PathBuf, ConfigError> {
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(ctx.error(key, format!("`{}` is not an absolute path", path.display())))
    }
}

pub(super) fn commands(list: &[String], key: &str, ctx: &Ctx) -> Result<(), ConfigError> {
    for (i, command) in list.iter().enumerate() {
        check_command(command).map_err(|p| ctx.error(&format!("{key}[{i}]"), p))?;
    }
    Ok(())
}

pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
