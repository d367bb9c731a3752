//! `ENVSNAP_*` environment variables that override config keys.
//!
//! `ENVSNAP_DAEMON__MAX_JOBS=4` sets `daemon.max_jobs`: after the prefix, `__`
//! separates the segments of the key, which are lowercased. Each variable is mapped
//! onto the config's schema here, before anything is merged, so a misspelled
//! variable is an error that names it (instead of a key nobody wrote in the file),
//! and the value is typed by the key it sets rather than guessed from its text:
//!
//! - integers (`max_jobs`, `compression`, `port`), numbers (`shrink_warning`) and
//!   booleans (`catch_up`) parse as such; every other scalar is a string, so `ENVSNAP_..._VERSION=2.0` is the string
//!   `2.0`;
//! - lists take a TOML array (`["group:ops", "alice"]`) or a single plain item;
//! - `version` takes a string or a TOML inline table (`{ file = "/srv/VERSION" }`).
//!
//! Variables that do not start with a section name (`ENVSNAP_SOCKET`, read by
//! `envsnapctl`, or the `ENVSNAP_ENV`, `ENVSNAP_JOB`... given to hook commands) are
//! not config overrides and are left alone. An empty value is ignored.

use config::{Value, ValueKind};

use super::error::ConfigError;
use super::values::is_valid_name;

const PREFIX: &str = "ENVSNAP_";
const SECTIONS: [&str; 7] = [
    "daemon",
    "store",
    "access",
    "restore",
    "import",
    "fleet",
    "environments",
];
const ACTIONS: [&str; 4] = ["read", "backup", "download", "restore"];

/// One variable mapped onto a key.
#[derive(Debug, Clone)]
pub(super) struct Override {
    pub variable: String,
    /// Dotted key, e.g. `environments.live.retention`.
    pub key: String,
    pub value: Value,
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Text,
    Integer,
    Float,
    Boolean,
    List,
    Version,
}

/// Maps the `ENVSNAP_*` variables among `vars` onto config keys, in name order
/// (so a later variable never silently depends on the environment's order).
pub(super) fn overrides_from_vars(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, ConfigError> {
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, value)| name.starts_with(PREFIX) && !value.is_empty())
        .collect();
    vars.sort();
    let mut overrides = Vec::new();
    for (variable, raw) in vars {
        let rest = variable[PREFIX.len()..].to_ascii_lowercase();
        let error = |problem: String| ConfigError::Variable {
            variable: variable.clone(),
            problem,
        };
        if !rest.contains("__") {
            let looks_like_a_key = SECTIONS
                .iter()
                .any(|s| rest == *s || rest.starts_with(&format!("{s}_")));
            if looks_like_a_key {
                return Err(error(format!(
                    "separate the parts of a key with `__`, e.g. ENVSNAP_DAEMON__MAX_JOBS \
                     for `daemon.max_jobs` (got `{rest}`)"
                )));
            }
            continue;
        }
        let segments: Vec<&str> = rest.split("__").collect();
        let key = segments.join(".");
        let shape = shape_of(&segments).ok_or_else(|| {
            error(format!(
                "does not map onto a config key: there is no key `{key}` (write \
                 ENVSNAP_ then the key with `__` between its parts, e.g. \
                 ENVSNAP_DAEMON__MAX_JOBS)"
            ))
        })?;
        let value =
            typed_value(shape, &raw).map_err(|problem| error(format!("{key}: {problem}")))?;
        overrides.push(Override {
            variable,
            key,
            value,
        });
    }
    Ok(overrides)
}

/// The shape of the value at `segments`, or `None` when no such key exists.
fn shape_of(segments: &[&str]) -> Option<Shape> {
    use Shape::*;
    let is_action = |a: &str| ACTIONS.contains(&a);
    Some(match segments {
        ["daemon", key] => match *key {
            "host" | "socket" | "socket_group" | "state_dir" | "timezone" | "command_timeout"
            | "stall_timeout" | "metrics_listen" | "drill_user" => Text,
            "max_jobs" => Integer,
            "catch_up" => Boolean,
            "on_failure" | "on_success" => List,
            _ => return None,
        },
        ["store", "url" | "key_file" | "retry_timeout"] => Text,
        ["store", "compression" | "concurrency"] => Integer,
        ["store", "upload_limit" | "download_limit"] => List,
        ["restore", "on_interrupt"] | ["import", "max_size"] => Text,
        ["fleet", "heartbeat" | "stale_after"] => Text,
        ["fleet", "watch"] => Boolean,
        ["fleet", "on_stale" | "on_recovered"] => List,
        ["access", action] if is_action(action) => List,
        ["environments", env, rest @ ..] if is_valid_name(env) => match rest {
            ["version"] => Version,
            ["retention" | "code"] => Text,
            ["keep_last" | "keep_daily" | "keep_weekly" | "keep_monthly"] => Integer,
            ["schedule" | "on_failure" | "on_success"] => List,
            ["access", action] if is_action(action) => List,
            ["app", "stop" | "start" | "check"] => List,
            ["mounts", name, "path"] if is_valid_name(name) => Text,
            ["mounts", name, "exclude"] if is_valid_name(name) => List,
            ["drill", "schedule" | "commands"] => List,
            ["drill", "timeout" | "load_timeout"] => Text,
            ["drill", "keep_sandbox_on_failure"] => Boolean,
            ["drill", "shrink_warning"] => Float,
            ["drill", "checks", name] if is_valid_name(name) => List,
            ["databases", name, key] if is_valid_name(name) => match *key {
                "kind" | "path" | "database" | "host" | "user" | "password_file" | "socket"
                | "rdb_path" => Text,
                "port" => Integer,
                "stop" | "start" => List,
                _ => return None,
            },
            _ => return None,
        },
        _ => return None,
    })
}

fn typed_value(shape: Shape, raw: &str) -> Result<Value, String> {
    Ok(match shape {
        Shape::Text => Value::from(raw),
        Shape::Integer => {
            let number: i64 = raw
                .trim()
                .parse()
                .map_err(|_| format!("expected an integer, got `{raw}`"))?;
            Value::from(number)
        }
        Shape::Float => {
            let number: f64 = raw
                .trim()
                .parse()
                .map_err(|_| format!("expected a number, got `{raw}`"))?;
            Value::from(number)
        }
        Shape::Boolean => match raw.trim() {
            "true" => Value::from(true),
            "false" => Value::from(false),
            _ => return Err(format!("expected `true` or `false`, got `{raw}`")),
        },
        Shape::List if raw.trim_start().starts_with('[') => {
            let value = parse_toml_value(raw)
                .map_err(|e| format!("expected a TOML array of strings: {e}"))?;
            match value {
                toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => {
                    toml_to_config(toml::Value::Array(items))
                }
                _ => return Err(format!("expected a TOML array of strings, got `{raw}`")),
            }
        }
        Shape::List => Value::from(vec![raw.to_owned()]),
        Shape::Version if raw.trim_start().starts_with('{') => {
            let value =
                parse_toml_value(raw).map_err(|e| format!("expected a TOML inline table: {e}"))?;
            toml_to_config(value)
        }
        Shape::Version => Value::from(raw),
    })
}

fn parse_toml_value(raw: &str) -> Result<toml::Value, String> {
    let mut table: toml::Table =
        toml::from_str(&format!("v = {raw}")).map_err(|e| e.message().to_owned())?;
    table.remove("v").ok_or_else(|| "no value".to_owned())
}

/// A TOML value as the `config` crate's value (for an override).
fn toml_to_config(value: toml::Value) -> Value {
    let kind = match value {
        toml::Value::String(s) => ValueKind::String(s),
        toml::Value::Integer(i) => ValueKind::I64(i),
        toml::Value::Float(f) => ValueKind::Float(f),
        toml::Value::Boolean(b) => ValueKind::Boolean(b),
        toml::Value::Datetime(d) => ValueKind::String(d.to_string()),
        toml::Value::Array(items) => {
            ValueKind::Array(items.into_iter().map(toml_to_config).collect())
        }
        toml::Value::Table(table) => ValueKind::Table(
            table
                .into_iter()
                .map(|(k, v)| (k, toml_to_config(v)))
                .collect(),
        ),
    };
    Value::new(None, kind)
}

/// The merged `config` value as TOML, so that it deserializes strictly: the
/// `config` crate's own deserializer converts between strings, numbers and
/// booleans, which would let `max_jobs = "4"` or `host = 5` through.
pub(super) fn config_to_toml(value: Value) -> Option<toml::Value> {
    Some(match value.kind {
        ValueKind::Nil => return None,
        ValueKind::Boolean(b) => toml::Value::Boolean(b),
        ValueKind::I64(i) => toml::Value::Integer(i),
        ValueKind::U64(u) => int_or_text(i64::try_from(u).ok(), u),
        ValueKind::I128(i) => int_or_text(i64::try_from(i).ok(), i),
        ValueKind::U128(u) => int_or_text(i64::try_from(u).ok(), u),
        ValueKind::Float(f) => toml::Value::Float(f),
        ValueKind::String(s) => toml::Value::String(s),
        ValueKind::Array(items) => {
            toml::Value::Array(items.into_iter().filter_map(config_to_toml).collect())
        }
        ValueKind::Table(table) => toml::Value::Table(
            table
                .into_iter()
                .filter_map(|(k, v)| config_to_toml(v).map(|v| (k, v)))
                .collect(),
        ),
    })
}

/// An integer TOML cannot hold becomes text, so it fails as a wrong type later.
fn int_or_text(small: Option<i64>, big: impl ToString) -> toml::Value {
    small.map_or_else(
        || toml::Value::String(big.to_string()),
        toml::Value::Integer,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(vars: &[(&str, &str)]) -> Result<Vec<Override>, ConfigError> {
        overrides_from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn one(name: &str, value: &str) -> (String, toml::Value) {
        let mut all = map(&[(name, value)]).unwrap();
        assert_eq!(all.len(), 1);
        let o = all.remove(0);
        (o.key, config_to_toml(o.value).unwrap())
    }

    #[test]
    fn keys_are_lowercased_and_typed() {
        assert_eq!(
            one("ENVSNAP_DAEMON__MAX_JOBS", "4"),
            ("daemon.max_jobs".into(), 4.into())
        );
        assert_eq!(
            one("ENVSNAP_DAEMON__CATCH_UP", "false"),
            ("daemon.catch_up".into(), false.into())
        );
        assert_eq!(
            one("ENVSNAP_ENVIRONMENTS__LIVE__VERSION", "2.0"),
            ("environments.live.version".into(), "2.0".into())
        );
        assert_eq!(
            one("ENVSNAP_DAEMON__SOCKET_GROUP", "1000"),
            ("daemon.socket_group".into(), "1000".into())
        );
    }

    #[test]
    fn lists_and_tables() {
        let (_, value) = one("ENVSNAP_ACCESS__READ", "group:ops");
        assert_eq!(value, toml::Value::Array(vec!["group:ops".into()]));
        let (_, value) = one(
            "ENVSNAP_ENVIRONMENTS__LIVE__SCHEDULE",
            r#"["0 3 * * *", "0 15 * * *"]"#,
        );
        assert_eq!(value.as_array().unwrap().len(), 2);
        let (key, value) = one(
            "ENVSNAP_ENVIRONMENTS__LIVE__VERSION",
            r#"{ file = "/srv/live/VERSION" }"#,
        );
        assert_eq!(key, "environments.live.version");
        assert_eq!(value["file"].as_str(), Some("/srv/live/VERSION"));
    }

    #[test]
    fn other_envsnap_variables_are_not_overrides() {
        let all = map(&[
            ("ENVSNAP_SOCKET", "/tmp/s"),
            ("ENVSNAP_ENV", "live"),
            ("PATH", "/bin"),
            ("ENVSNAP_DAEMON__HOST", ""),
        ])
        .unwrap();
        assert!(all.is_empty());
    }

    #[test]
    fn misspelled_variables_are_named() {
        let err = map(&[("ENVSNAP_DAEMON__MAX_JOBZ", "4")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("environment variable ENVSNAP_DAEMON__MAX_JOBZ: "),
            "{err}"
        );
        assert!(err.contains("`daemon.max_jobz`"), "{err}");
        let err = map(&[("ENVSNAP_DAEMON_MAX_JOBS", "4")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ENVSNAP_DAEMON_MAX_JOBS") && err.contains("`__`"),
            "{err}"
        );
        let err = map(&[("ENVSNAP_DEAMON__MAX_JOBS", "4")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no key `deamon.max_jobs`"), "{err}");
        assert!(map(&[("ENVSNAP_ENVIRONMENTS__LIVE__MOUNTS__UP__PATH", "/x")]).is_ok());
        assert!(map(&[("ENVSNAP_ENVIRONMENTS__LIVE__MOUNTS__PATH", "/x")]).is_err());
    }

    #[test]
    fn badly_typed_values_are_named() {
        let err = map(&[("ENVSNAP_DAEMON__MAX_JOBS", "four")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "environment variable ENVSNAP_DAEMON__MAX_JOBS: daemon.max_jobs: expected an \
             integer, got `four`"
        );
        assert!(map(&[("ENVSNAP_DAEMON__CATCH_UP", "yes")]).is_err());
        assert!(map(&[("ENVSNAP_ACCESS__READ", "[1, 2]")]).is_err());
    }
}
