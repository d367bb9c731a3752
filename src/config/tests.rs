//! Tests of the assembled config: parts order, access lookup, the embedded default.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::config::Action;

const SMALL: &str = r#"
[access]
read = ["group:envsnap"]

[environments.live]
version = "1.0"
code = "/srv/live/app"

[environments.live.mounts.uploads]
path = "/srv/live/uploads"
exclude = ["cache/**"]

[environments.live.mounts.media]
path = "/srv/live/media"

[environments.live.databases.sessions]
kind = "sqlite"
path = "/srv/live/sessions.db"

[environments.live.databases.main]
kind = "sqlite"
path = "/srv/live/main.db"

[environments.test]
version = { command = "cat /srv/test/VERSION" }
[environments.test.access]
restore = ["alice"]
"#;

fn small() -> Config {
    Config::from_toml(SMALL, Path::new("/etc/envsnap/envsnap.toml")).unwrap()
}

#[test]
fn parts_come_code_first_then_mounts_then_databases_by_name() {
    let config = small();
    let names: Vec<String> = config
        .env("live")
        .unwrap()
        .parts()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(
        names,
        [
            "code",
            "files:media",
            "files:uploads",
            "database:main",
            "database:sessions"
        ]
    );
    let parts = config.env("live").unwrap().parts();
    assert_eq!(
        parts[2].source,
        PartSource::Tree {
            path: "/srv/live/uploads".into(),
            exclude: vec!["cache/**".to_owned()]
        }
    );
    assert!(config.env("test").unwrap().parts().is_empty());
}

#[test]
fn environment_access_replaces_the_global_rules() {
    let config = small();
    let envsnap = ["envsnap".to_owned()];
    assert!(
        config
            .access_for(Some("live"))
            .allows(Action::Read, "bob", &envsnap)
    );
    assert!(
        config
            .access_for(None)
            .allows(Action::Read, "bob", &envsnap)
    );
    assert!(
        config
            .access_for(Some("unknown"))
            .allows(Action::Read, "bob", &envsnap)
    );
    let test = config.access_for(Some("test"));
    assert!(!test.allows(Action::Read, "bob", &envsnap));
    assert!(test.allows(Action::Restore, "alice", &[]));
    assert!(test.allows(Action::Read, "alice", &[]));
}

#[test]
fn defaults_are_filled_in() {
    let config = small();
    assert_eq!(config.path, Path::new("/etc/envsnap/envsnap.toml"));
    assert_eq!(
        config.daemon.socket,
        Path::new("/run/envsnap/envsnapd.sock")
    );
    assert_eq!(config.daemon.state_dir, Path::new("/var/lib/envsnap"));
    assert_eq!(config.daemon.timezone, chrono_tz::Tz::UTC);
    assert_eq!(config.daemon.max_jobs, 2);
    assert!(config.daemon.catch_up);
    assert_eq!(config.daemon.command_timeout, Duration::from_secs(600));
    assert_eq!(config.daemon.host, defaults::hostname());
    assert_eq!(config.store.url, "file:///var/lib/envsnap/store");
    assert_eq!(config.store.compression, 1);
    let live = config.env("live").unwrap();
    assert_eq!(live.retention, Duration::from_secs(14 * 86_400));
    assert_eq!(live.version, VersionSource::Literal("1.0".into()));
}

#[test]
fn embedded_default_is_self_contained() {
    let dir = Path::new("/home/u/.local/state/envsnap");
    let config = Config::embedded_default(dir);
    assert_eq!(config.path, Path::new(EMBEDDED_DEFAULT));
    assert_eq!(config.daemon.socket, dir.join("envsnapd.sock"));
    assert_eq!(
        config.store.url,
        "file:///home/u/.local/state/envsnap/store"
    );
    let demo = config.env("demo").unwrap();
    let names: Vec<String> = demo.parts().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["code", "database:app"]);
    assert_eq!(demo.code.as_deref(), Some(dir.join("demo/app").as_path()));
    assert_eq!(
        demo.databases["app"].path.as_deref(),
        Some(dir.join("demo/data/app.db").as_path())
    );
    assert!(demo.schedule.is_empty());
    assert_eq!(config.access, AccessRules::default());
}

#[test]
fn default_state_dir_is_absolute() {
    assert!(default_state_dir().is_absolute());
}

#[test]
fn database_kinds_use_lowercase_names() {
    let kind: DatabaseKind = serde_json::from_str("\"mysql\"").unwrap();
    assert_eq!(kind, DatabaseKind::Mariadb);
    assert_eq!(
        serde_json::to_string(&DatabaseKind::Postgres).unwrap(),
        "\"postgres\""
    );
    assert_eq!(DatabaseKind::Redis.to_string(), "redis");
}

#[test]
fn an_empty_file_is_a_valid_config() {
    let config = Config::from_toml("", Path::new("/etc/envsnap/envsnap.toml")).unwrap();
    assert!(config.environments.is_empty());
    assert_eq!(config.access, AccessRules::default());
}

#[test]
fn names_with_dots_survive_the_merge() {
    let text = "[environments.\"v1.2\"]\nversion = \"1\"\n[environments.\"v1.2\".mounts.\"a.b\"]\npath = \"/srv/a\"\n";
    let config = Config::from_toml(text, Path::new("/x.toml")).unwrap();
    assert!(config.env("v1.2").unwrap().mounts.contains_key("a.b"));
}

#[test]
fn store_transfer_settings_are_read_and_checked() {
    let file = Path::new("/etc/envsnap/envsnap.toml");
    let config = Config::from_toml(
        r#"
[daemon]
timezone = "Europe/Berlin"
[store]
concurrency = 12
retry_timeout = "90s"
upload_limit = "20MiB/s"
download_limit = ["08:00-20:00 5MiB/s", "50MB/s"]
"#,
        file,
    )
    .unwrap();
    let transfer = &config.store.transfer;
    assert_eq!(transfer.concurrency, 12);
    assert_eq!(transfer.retry_timeout, Duration::from_secs(90));
    assert_eq!(transfer.timezone, chrono_tz::Europe::Berlin);
    let noon = chrono::NaiveTime::from_hms_opt(12, 0, 0).unwrap();
    let night = chrono::NaiveTime::from_hms_opt(23, 0, 0).unwrap();
    assert_eq!(transfer.upload_limit.rate_at(night), Some(20 << 20));
    assert_eq!(transfer.download_limit.rate_at(noon), Some(5 << 20));
    assert_eq!(transfer.download_limit.rate_at(night), Some(50_000_000));
    assert_eq!(small().store.transfer.concurrency, 8, "the default");
    assert_eq!(small().store.transfer.upload_limit.rate_at(noon), None);

    for (text, expected) in [
        ("concurrency = 0", "store.concurrency: must be from 1 to 64"),
        ("retry_timeout = \"soon\"", "store.retry_timeout"),
        (
            "upload_limit = \"fast\"",
            "store.upload_limit: `fast` is not a rate",
        ),
        (
            "download_limit = [\"8-20 1MiB/s\"]",
            "store.download_limit: `8-20 1MiB/s` is not a rate",
        ),
    ] {
        let error = Config::from_toml(&format!("[store]\n{text}\n"), file)
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{text}: {error}");
    }
}

#[test]
fn object_lock_is_configured_on_s3_stores_only() {
    let file = Path::new("/etc/envsnap.toml");
    let s3 = "[store]\nurl = \"s3://vault/hosts\"\n";
    let config = Config::from_toml(
        &format!("{s3}lock = {{ mode = \"compliance\", extra = \"2d\" }}\n"),
        file,
    )
    .unwrap();
    let lock = config.store.lock.unwrap();
    assert_eq!(lock.mode, crate::store::LockMode::Compliance);
    assert_eq!(lock.extra, Duration::from_secs(2 * 86_400));
    let config = Config::from_toml(&format!("{s3}lock = {{ mode = \"governance\" }}\n"), file);
    assert_eq!(
        config.unwrap().store.lock.unwrap().extra,
        Duration::from_secs(86_400)
    );
    assert_eq!(small().store.lock, None, "off by default");

    for (text, expected) in [
        (
            "url = \"file:///var/backups\"\nlock = { mode = \"governance\" }",
            "store.lock: needs an S3 store",
        ),
        ("lock = { extra = \"1d\" }", "store.lock.mode: is required"),
        ("lock = { mode = \"forever\" }", "store.lock.mode:"),
        (
            "lock = { mode = \"governance\", extra = \"soon\" }",
            "store.lock.extra",
        ),
        (
            "lock = { mode = \"governance\", extra = \"4000d\" }",
            "store.lock.extra: must be at most 3650d",
        ),
        (
            "lock = { mode = \"governance\", days = 3 }",
            "store.lock.days: unknown key",
        ),
    ] {
        let text = match text.starts_with("url") {
            true => format!("[store]\n{text}\n"),
            false => format!("{s3}{text}\n"),
        };
        let error = Config::from_toml(&text, file).unwrap_err().to_string();
        assert!(error.contains(expected), "{text}: {error}");
        assert_eq!(error.lines().count(), 1, "{error}");
    }
}
