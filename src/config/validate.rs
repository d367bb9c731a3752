//! From text to a valid [`Config`]: parse, merge overrides, deserialize strictly,
//! then check every value and fill in defaults. The first problem found is
//! returned; checks run in file order (daemon, store, access, environments by name)
//! so the same file always gives the same error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::access::{AccessRules, Principal};
use super::defaults::{
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_MAX_JOBS, DEFAULT_RETENTION, DEFAULT_SOCKET,
    DEFAULT_STALL_TIMEOUT, DEFAULT_STATE_DIR, hostname,
};
use super::error::ConfigError;
use super::origin::{Ctx, absolute, commands, one_line};
use super::overrides::{Override, config_to_toml};
use super::raw::{
    RawAccess, RawConfig, RawDaemon, RawDrill, RawEnv, RawFleet, RawImport, RawMount, RawRestore,
};
use super::schema::{
    AppConfig, Config, DEFAULT_HEARTBEAT, DEFAULT_IMPORT_MAX_SIZE, DaemonConfig, DatabaseConfig,
    DatabaseKind, DrillConfig, EnvConfig, FleetConfig, ImportConfig, MountConfig, OnInterrupt,
    RestoreConfig,
};
use super::validate_db;
use super::validate_store;
use super::values::{
    NAME_RULE, check_command, is_valid_name, normalize_cron, parse_duration, parse_size,
};
use super::version::VersionSource;

pub(super) fn parse(
    text: &str,
    file: &Path,
    overrides: &[Override],
) -> Result<Config, ConfigError> {
    // Parsed once here for the syntax error's line number, and kept to tell whether
    // a bad key came from the file or from a variable.
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.to_path_buf(),
        line: e.span().map_or(1, |span| line_of(text, span.start)),
        message: one_line(e.message()),
    })?;
    let ctx = Ctx {
        file,
        overrides,
        table,
    };
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml));
    for o in overrides {
        builder = builder
            .set_override(o.key.as_str(), o.value.clone())
            .map_err(|e| ConfigError::Variable {
                variable: o.variable.clone(),
                problem: one_line(&e.to_string()),
            })?;
    }
    let merged = builder.build().map_err(|e| ctx.error("", e.to_string()))?;
    let tree = config_to_toml(merged.cache).unwrap_or_else(|| toml::Table::new().into());
    let raw: RawConfig = serde_path_to_error::deserialize(tree).map_err(|e| ctx.serde_error(e))?;
    build(raw, &ctx, file)
}

fn build(raw: RawConfig, ctx: &Ctx, file: &Path) -> Result<Config, ConfigError> {
    let daemon = daemon(raw.daemon, ctx)?;
    let store = validate_store::store(raw.store, &daemon, ctx)?;
    let access = access(raw.access, "access", ctx)?;
    let restore = restore(raw.restore, ctx)?;
    let import = import(raw.import, ctx)?;
    let fleet = fleet(raw.fleet, ctx)?;
    let mut environments = BTreeMap::new();
    for (name, env) in raw.environments {
        let built = environment(&name, env, ctx)?;
        environments.insert(name, built);
    }
    Ok(Config {
        path: file.to_path_buf(),
        daemon,
        store,
        access,
        restore,
        import,
        fleet,
        environments,
    })
}

fn fleet(raw: RawFleet, ctx: &Ctx) -> Result<FleetConfig, ConfigError> {
    let heartbeat = match raw.heartbeat {
        None => DEFAULT_HEARTBEAT,
        Some(text) => positive_duration(&text, "fleet.heartbeat", ctx)?,
    };
    let stale_after = match raw.stale_after {
        None => None,
        Some(text) => Some(positive_duration(&text, "fleet.stale_after", ctx)?),
    };
    commands(&raw.on_stale, "fleet.on_stale", ctx)?;
    commands(&raw.on_recovered, "fleet.on_recovered", ctx)?;
    Ok(FleetConfig {
        heartbeat,
        stale_after,
        watch: raw.watch.unwrap_or(false),
        on_stale: raw.on_stale,
        on_recovered: raw.on_recovered,
    })
}

fn restore(raw: RawRestore, ctx: &Ctx) -> Result<RestoreConfig, ConfigError> {
    let on_interrupt = match raw.on_interrupt.as_deref() {
        None | Some("rollback") => OnInterrupt::Rollback,
        Some("leave") => OnInterrupt::Leave,
        Some(other) => {
            return Err(ctx.error(
                "restore.on_interrupt",
                format!("`{other}` is not one of: rollback, leave"),
            ));
        }
    };
    Ok(RestoreConfig { on_interrupt })
}

fn import(raw: RawImport, ctx: &Ctx) -> Result<ImportConfig, ConfigError> {
    let max_size = match raw.max_size {
        None => DEFAULT_IMPORT_MAX_SIZE,
        Some(text) => parse_size(&text).map_err(|p| ctx.error("import.max_size", p))?,
    };
    Ok(ImportConfig { max_size })
}

fn daemon(raw: RawDaemon, ctx: &Ctx) -> Result<DaemonConfig, ConfigError> {
    let host = match raw.host {
        Some(host) if is_valid_name(&host) => host,
        Some(host) => {
            return Err(ctx.error(
                "daemon.host",
                format!("`{host}` is not a valid host id: {NAME_RULE}"),
            ));
        }
        None => {
            let host = hostname();
            if !is_valid_name(&host) {
                return Err(ctx.error(
                    "daemon.host",
                    format!("the hostname `{host}` is not a valid host id ({NAME_RULE}): set daemon.host"),
                ));
            }
            host
        }
    };
    let socket = absolute(
        raw.socket.unwrap_or_else(|| DEFAULT_SOCKET.into()),
        "daemon.socket",
        ctx,
    )?;
    let state_dir = absolute(
        raw.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
        "daemon.state_dir",
        ctx,
    )?;
    if let Some(group) = &raw.socket_group
        && (group.is_empty() || group.contains(char::is_whitespace))
    {
        return Err(ctx.error(
            "daemon.socket_group",
            format!("`{group}` is not a group name"),
        ));
    }
    let timezone = match raw.timezone {
        None => chrono_tz::Tz::UTC,
        Some(name) => name.parse().map_err(|_| {
            ctx.error(
                "daemon.timezone",
                format!("unknown time zone `{name}`: expected an IANA name such as `UTC` or `Europe/Berlin`"),
            )
        })?,
    };
    let max_jobs = match raw.max_jobs {
        None => DEFAULT_MAX_JOBS,
        Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
        Some(n) => return Err(ctx.error("daemon.max_jobs", format!("must be at least 1, got {n}"))),
    };
    commands(&raw.on_failure, "daemon.on_failure", ctx)?;
    commands(&raw.on_success, "daemon.on_success", ctx)?;
    let command_timeout = match raw.command_timeout {
        None => DEFAULT_COMMAND_TIMEOUT,
        Some(text) => positive_duration(&text, "daemon.command_timeout", ctx)?,
    };
    let stall_timeout = match raw.stall_timeout {
        None => DEFAULT_STALL_TIMEOUT,
        Some(text) => positive_duration(&text, "daemon.stall_timeout", ctx)?,
    };
    let metrics_listen = match raw.metrics_listen {
        None => None,
        Some(text) => {
            Some(metrics_address(&text).map_err(|p| ctx.error("daemon.metrics_listen", p))?)
        }
    };
    check_drill_user(raw.drill_user.as_deref(), ctx)?;
    Ok(DaemonConfig {
        host,
        socket,
        socket_group: raw.socket_group,
        state_dir,
        timezone,
        max_jobs,
        catch_up: raw.catch_up.unwrap_or(true),
        on_failure: raw.on_failure,
        on_success: raw.on_success,
        command_timeout,
        stall_timeout,
        metrics_listen,
        drill_user: raw.drill_user,
    })
}

/// The user scratch PostgreSQL servers run as must not be root (PostgreSQL refuses).
fn check_drill_user(user: Option<&str>, ctx: &Ctx) -> Result<(), ConfigError> {
    match user {
        Some(user) if user.is_empty() || user == "root" || user.contains(char::is_whitespace) => {
            Err(ctx.error(
                "daemon.drill_user",
                format!("`{user}` cannot run scratch servers: name an unprivileged user"),
            ))
        }
        _ => Ok(()),
    }
}

fn metrics_address(text: &str) -> Result<SocketAddr, String> {
    let address: SocketAddr = text.parse().map_err(|_| {
        format!("`{text}` is not an address: expected IP:PORT such as `127.0.0.1:9477`")
    })?;
    if !address.ip().is_loopback() {
        return Err(format!(
            "`{text}` is not a loopback address: metrics are served on 127.0.0.1 or [::1] only"
        ));
    }
    Ok(address)
}

fn access(raw: RawAccess, key: &str, ctx: &Ctx) -> Result<AccessRules, ConfigError> {
    let list = |items: Vec<String>, action: &str| {
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                Principal::parse(item).map_err(|p| ctx.error(&format!("{key}.{action}[{i}]"), p))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(AccessRules {
        read: list(raw.read, "read")?,
        backup: list(raw.backup, "backup")?,
        download: list(raw.download, "download")?,
        restore: list(raw.restore, "restore")?,
    })
}

fn environment(name: &str, raw: RawEnv, ctx: &Ctx) -> Result<EnvConfig, ConfigError> {
    let key = format!("environments.{name}");
    if !is_valid_name(name) {
        return Err(ctx.error(
            &key,
            format!("`{name}` is not a valid environment name: {NAME_RULE}"),
        ));
    }
    let version = version(raw.version, &format!("{key}.version"), ctx)?;
    let schedule = schedules(&raw.schedule, &key, ctx)?;
    let retention = match raw.retention {
        None => DEFAULT_RETENTION,
        Some(text) => positive_duration(&text, &format!("{key}.retention"), ctx)?,
    };
    let code = match raw.code {
        None => None,
        Some(path) => Some(absolute(path, &format!("{key}.code"), ctx)?),
    };
    // Directories already claimed by a part, to refuse two parts backing up one.
    let mut directories: Vec<(PathBuf, String)> = Vec::new();
    if let Some(code) = &code {
        directories.push((normalized(code), "code".to_owned()));
    }
    let mounts = mounts(raw.mounts, &key, &mut directories, ctx)?;
    let mut databases = BTreeMap::new();
    for (db_name, db) in raw.databases {
        let db_key = format!("{key}.databases.{db_name}");
        part_name(&db_name, &db_key, ctx)?;
        let built = validate_db::database(db, &db_key, ctx)?;
        databases.insert(db_name, built);
    }
    validate_db::distinct_files(&databases, &key, ctx)?;
    for (list, what) in [
        (&raw.app.stop, "app.stop"),
        (&raw.app.start, "app.start"),
        (&raw.app.check, "app.check"),
    ] {
        commands(list, &format!("{key}.{what}"), ctx)?;
    }
    commands(&raw.on_failure, &format!("{key}.on_failure"), ctx)?;
    commands(&raw.on_success, &format!("{key}.on_success"), ctx)?;
    let access = match raw.access {
        None => None,
        Some(rules) => Some(access(rules, &format!("{key}.access"), ctx)?),
    };
    let drill = drill(raw.drill, &key, &databases, ctx)?;
    Ok(EnvConfig {
        name: name.to_owned(),
        version,
        schedule,
        retention,
        keep: crate::retention::KeepCounts {
            last: raw.keep_last,
            daily: raw.keep_daily,
            weekly: raw.keep_weekly,
            monthly: raw.keep_monthly,
        },
        code,
        mounts,
        databases,
        app: AppConfig {
            stop: raw.app.stop,
            start: raw.app.start,
            check: raw.app.check,
        },
        access,
        on_failure: raw.on_failure,
        on_success: raw.on_success,
        drill,
    })
}

/// The cron expressions of `KEY.schedule`, normalized; the first bad one is named.
fn schedules(list: &[String], key: &str, ctx: &Ctx) -> Result<Vec<String>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, expr)| {
            normalize_cron(expr).map_err(|p| ctx.error(&format!("{key}.schedule[{i}]"), p))
        })
        .collect()
}

/// `[environments.NAME.drill]`: cron like `schedule`, checks only for the
/// environment's SQL databases, a positive timeout, a fraction for warnings.
fn drill(
    raw: RawDrill,
    env_key: &str,
    databases: &BTreeMap<String, DatabaseConfig>,
    ctx: &Ctx,
) -> Result<DrillConfig, ConfigError> {
    let key = format!("{env_key}.drill");
    let defaults = DrillConfig::default();
    let schedule = schedules(&raw.schedule, &key, ctx)?;
    for (name, queries) in &raw.checks {
        let check_key = format!("{key}.checks.{name}");
        match databases.get(name).map(|db| db.kind) {
            None => {
                return Err(ctx.error(
                    &check_key,
                    format!("the environment has no database `{name}`"),
                ));
            }
            Some(DatabaseKind::Redis) => {
                return Err(ctx.error(
                    &check_key,
                    "Redis has no SQL: use drill.commands with $ENVSNAP_DRILL_<NAME>_SOCKET",
                ));
            }
            Some(_) => {}
        }
        for (i, sql) in queries.iter().enumerate() {
            if sql.trim().is_empty() || sql.contains('\0') {
                return Err(ctx.error(&format!("{check_key}[{i}]"), "the query is empty"));
            }
        }
    }
    commands(&raw.commands, &format!("{key}.commands"), ctx)?;
    let timeout = match raw.timeout {
        None => defaults.timeout,
        Some(text) => positive_duration(&text, &format!("{key}.timeout"), ctx)?,
    };
    let load_timeout = match raw.load_timeout {
        None => defaults.load_timeout,
        Some(text) => positive_duration(&text, &format!("{key}.load_timeout"), ctx)?,
    };
    let shrink_warning = match raw.shrink_warning {
        None => defaults.shrink_warning,
        Some(f) if (0.0..=1.0).contains(&f) => f,
        Some(f) => {
            return Err(ctx.error(
                &format!("{key}.shrink_warning"),
                format!("must be a fraction from 0 to 1, got {f}"),
            ));
        }
    };
    Ok(DrillConfig {
        schedule,
        checks: raw.checks,
        commands: raw.commands,
        timeout,
        load_timeout,
        keep_sandbox_on_failure: raw.keep_sandbox_on_failure.unwrap_or(false),
        shrink_warning,
    })
}

/// An environment's `mounts`: each a valid part name and an absolute path that no
/// other part of the environment backs up already (claimed in `directories`).
fn mounts(
    raw_mounts: BTreeMap<String, RawMount>,
    key: &str,
    directories: &mut Vec<(PathBuf, String)>,
    ctx: &Ctx,
) -> Result<BTreeMap<String, MountConfig>, ConfigError> {
    let mut mounts = BTreeMap::new();
    for (mount_name, mount) in raw_mounts {
        let mount_key = format!("{key}.mounts.{mount_name}");
        part_name(&mount_name, &mount_key, ctx)?;
        let path = absolute(mount.path, &format!("{mount_key}.path"), ctx)?;
        let part = format!("files:{mount_name}");
        if let Some((_, other)) = directories
            .iter()
            .find(|(dir, _)| *dir == normalized(&path))
        {
            return Err(ctx.error(
                &format!("{mount_key}.path"),
                format!(
                    "two parts back up the same directory: {other} and {part} both back up {}",
                    path.display()
                ),
            ));
        }
        directories.push((normalized(&path), part));
        for (i, pattern) in mount.exclude.iter().enumerate() {
            check_exclude(pattern)
                .map_err(|p| ctx.error(&format!("{mount_key}.exclude[{i}]"), p))?;
        }
        mounts.insert(
            mount_name,
            MountConfig {
                path,
                exclude: mount.exclude,
            },
        );
    }
    Ok(mounts)
}

/// `version = "1.4.2"`, `{ file = "/srv/live/VERSION" }` or `{ command = "..." }`.
fn version(raw: Option<toml::Value>, key: &str, ctx: &Ctx) -> Result<VersionSource, ConfigError> {
    const SHAPE: &str = "a version string, `{ file = \"PATH\" }` or `{ command = \"COMMAND\" }`";
    let mut table = match raw {
        None => return Err(ctx.error(key, "missing required key")),
        Some(toml::Value::String(text)) if text.trim().is_empty() => {
            return Err(ctx.error(key, "the version is empty"));
        }
        Some(toml::Value::String(text)) => return Ok(VersionSource::Literal(text)),
        Some(toml::Value::Table(table)) => table,
        Some(other) => {
            return Err(ctx.error(
                key,
                format!(
                    "wrong type: expected {SHAPE}, found {} `{other}`",
                    other.type_str()
                ),
            ));
        }
    };
    if let Some(unknown) = table.keys().find(|k| *k != "file" && *k != "command") {
        return Err(ctx.error(
            &format!("{key}.{unknown}"),
            "unknown key (expected `file` or `command`)",
        ));
    }
    let mut text = |field: &str| match table.remove(field) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ctx.error(
            &format!("{key}.{field}"),
            format!(
                "wrong type: expected a string, found {} `{other}`",
                other.type_str()
            ),
        )),
    };
    match (text("file")?, text("command")?) {
        (Some(file), None) => Ok(VersionSource::File(absolute(
            file.into(),
            &format!("{key}.file"),
            ctx,
        )?)),
        (None, Some(command)) => {
            check_command(&command).map_err(|p| ctx.error(&format!("{key}.command"), p))?;
            Ok(VersionSource::Command(command))
        }
        (Some(_), Some(_)) => Err(ctx.error(key, "give either `file` or `command`, not both")),
        (None, None) => Err(ctx.error(key, format!("expected {SHAPE}"))),
    }
}

fn part_name(name: &str, key: &str, ctx: &Ctx) -> Result<(), ConfigError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(ctx.error(
            key,
            format!("`{name}` is not a valid part name: {NAME_RULE}"),
        ))
    }
}

fn check_exclude(pattern: &str) -> Result<(), String> {
    if pattern.starts_with('/') {
        return Err(format!(
            "`{pattern}`: exclude patterns are relative to the mount's path"
        ));
    }
    // The same settings as the tree archiver's matcher (`repo::archiver`).
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(drop)
        .map_err(|e| format!("bad exclude pattern `{pattern}`: {}", e.kind()))
}

/// The path with `.` components and trailing slashes gone, for comparing.
fn normalized(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| *c != Component::CurDir)
        .collect()
}

fn positive_duration(text: &str, key: &str, ctx: &Ctx) -> Result<Duration, ConfigError> {
    match parse_duration(text) {
        Ok(d) if d.is_zero() => Err(ctx.error(
            key,
            format!("`{text}` is zero: the duration must be positive"),
        )),
        Ok(d) => Ok(d),
        Err(problem) => Err(ctx.error(key, problem)),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
