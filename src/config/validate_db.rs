//! Checks for `[environments.ENV.databases.NAME]`: each kind takes its own keys and
//! needs some of them. A key that does not apply to the kind is refused rather than
//! ignored, since it usually means the operator expected it to do something.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::origin::{Ctx, absolute, commands};
use super::raw::RawDatabase;
use super::schema::{DatabaseConfig, DatabaseKind};

pub(super) fn database(
    raw: RawDatabase,
    key: &str,
    ctx: &Ctx,
) -> Result<DatabaseConfig, ConfigError> {
    let kind = raw.kind;
    let at = |field: &str| format!("{key}.{field}");
    only_applicable_keys(&raw, key, ctx)?;
    required_keys(&raw, key, ctx)?;
    let path = |value: Option<PathBuf>, field: &str| {
        value.map(|p| absolute(p, &at(field), ctx)).transpose()
    };
    let file = path(raw.path, "path")?;
    let socket = path(raw.socket, "socket")?;
    let rdb_path = path(raw.rdb_path, "rdb_path")?;
    let password_file = path(raw.password_file, "password_file")?;
    if let Some(file) = &password_file {
        check_password_file(file).map_err(|p| ctx.error(&at("password_file"), p))?;
    }
    commands(&raw.stop, &at("stop"), ctx)?;
    commands(&raw.start, &at("start"), ctx)?;
    Ok(DatabaseConfig {
        kind,
        path: file,
        database: raw.database,
        host: raw.host,
        port: raw.port,
        user: raw.user,
        password_file,
        socket,
        rdb_path,
        stop: raw.stop,
        start: raw.start,
    })
}

/// Refuses a key that does not apply to the database's kind, naming those that do.
fn only_applicable_keys(raw: &RawDatabase, key: &str, ctx: &Ctx) -> Result<(), ConfigError> {
    let kind = raw.kind;
    let at = |field: &str| format!("{key}.{field}");
    let allowed: &[&str] = match kind {
        DatabaseKind::Sqlite => &["path"],
        DatabaseKind::Postgres => &["database", "host", "port", "user", "password_file"],
        DatabaseKind::Mariadb => &[
            "database",
            "host",
            "port",
            "user",
            "password_file",
            "socket",
        ],
        DatabaseKind::Redis => &[
            "host",
            "port",
            "user",
            "password_file",
            "socket",
            "rdb_path",
        ],
    };
    let given = [
        ("path", raw.path.is_some()),
        ("database", raw.database.is_some()),
        ("host", raw.host.is_some()),
        ("port", raw.port.is_some()),
        ("user", raw.user.is_some()),
        ("password_file", raw.password_file.is_some()),
        ("socket", raw.socket.is_some()),
        ("rdb_path", raw.rdb_path.is_some()),
    ];
    for (field, is_set) in given {
        if is_set && !allowed.contains(&field) {
            let hint = if kind == DatabaseKind::Postgres && field == "socket" {
                "; for a Unix socket, set `host` to the socket directory"
            } else {
                ""
            };
            return Err(ctx.error(
                &at(field),
                format!(
                    "`{field}` does not apply to a {kind} database (it takes {}, stop, start){hint}",
                    allowed.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses a database missing what its kind needs, or given both a socket and a
/// host, or an empty name.
fn required_keys(raw: &RawDatabase, key: &str, ctx: &Ctx) -> Result<(), ConfigError> {
    let kind = raw.kind;
    let at = |field: &str| format!("{key}.{field}");
    let missing = |field: &str, why: &str| {
        ctx.error(
            &at(field),
            format!("missing required key: a {kind} database needs {why}"),
        )
    };
    match kind {
        DatabaseKind::Sqlite if raw.path.is_none() => {
            return Err(missing("path", "the database file's `path`"));
        }
        DatabaseKind::Postgres | DatabaseKind::Mariadb if raw.database.is_none() => {
            return Err(missing("database", "the `database` name"));
        }
        DatabaseKind::Redis if raw.rdb_path.is_none() => {
            return Err(missing(
                "rdb_path",
                "`rdb_path`, the dump file a restore replaces",
            ));
        }
        DatabaseKind::Redis if raw.socket.is_none() && raw.host.is_none() => {
            return Err(missing("socket", "`socket` or `host` to reach the server"));
        }
        _ => {}
    }
    if raw.socket.is_some() && raw.host.is_some() {
        return Err(ctx.error(&at("socket"), "set either `socket` or `host`, not both"));
    }
    for (field, value) in [
        ("database", &raw.database),
        ("host", &raw.host),
        ("user", &raw.user),
    ] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(ctx.error(&at(field), "must not be empty"));
        }
    }
    Ok(())
}

/// Two SQLite parts of one environment may not back up the same file.
pub(super) fn distinct_files(
    databases: &BTreeMap<String, DatabaseConfig>,
    env_key: &str,
    ctx: &Ctx,
) -> Result<(), ConfigError> {
    let mut seen: BTreeMap<&PathBuf, &str> = BTreeMap::new();
    for (name, database) in databases {
        let Some(path) = &database.path else { continue };
        if let Some(other) = seen.insert(path, name) {
            return Err(ctx.error(
                &format!("{env_key}.databases.{name}.path"),
                format!(
                    "two parts back up the same file: database:{other} and database:{name} both back up {}",
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks a password file: present, a file, not readable by everyone.
fn check_password_file(path: &Path) -> Result<(), String> {
    let metadata =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !metadata.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o004 != 0 {
        return Err(format!(
            "{} is readable by everyone (mode {mode:04o}): run `chmod o-r` on it",
            path.display()
        ));
    }
    Ok(())
}
