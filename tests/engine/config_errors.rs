//! Config files with one mistake each, loaded from a temp directory: the error is
//! one line that names the file (or the variable), the key and the problem.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use envsnap::config::{Config, ConfigError, ConfigOrigin, DatabaseKind, VersionSource};

/// A minimal valid environment to add mistakes to.
const LIVE: &str = "[environments.live]\nversion = \"1.0\"\n";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Loads `text` as `envsnap.toml` without any environment variables.
    fn load(&self, text: &str) -> (PathBuf, Result<Config, ConfigError>) {
        let path = self.write("envsnap.toml", text);
        let result = Config::load_with_vars(&path, Vec::new());
        (path, result)
    }

    /// Asserts that `text` fails with exactly `FILE: KEY: ...PROBLEM...` on one line.
    fn assert_error(&self, text: &str, key: &str, problem: &str) -> String {
        let (path, result) = self.load(text);
        let message = result
            .expect_err("the config should be refused")
            .to_string();
        let prefix = format!("{}: {key}: ", path.display());
        assert!(
            message.starts_with(&prefix),
            "expected prefix `{prefix}` in: {message}"
        );
        assert!(
            message.contains(problem),
            "expected `{problem}` in: {message}"
        );
        assert!(!message.contains('\n'), "not one line: {message}");
        message
    }
}

#[test]
fn missing_file_is_named() {
    let fixture = Fixture::new();
    let path = fixture.dir.path().join("absent.toml");
    let message = Config::load_with_vars(&path, Vec::new())
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        format!(
            "{}: cannot read the config file: No such file or directory (os error 2)",
            path.display()
        )
    );
}

#[test]
fn syntax_error_gives_the_line() {
    let fixture = Fixture::new();
    let (path, result) = fixture.load("[daemon]\nmax_jobs = 2\ncatch_up = tru\n");
    let message = result.unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}:3: TOML syntax error: ", path.display())),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn unknown_keys_anywhere() {
    let fixture = Fixture::new();
    let message =
        fixture.assert_error("[daemon]\nmax_jobz = 3\n", "daemon.max_jobz", "unknown key");
    assert!(
        message.contains("`max_jobs`"),
        "lists the known keys: {message}"
    );
    fixture.assert_error("colour = 1\n", "colour", "unknown key");
    fixture.assert_error(
        &format!("{LIVE}codee = \"/srv/x\"\n"),
        "environments.live.codee",
        "unknown key",
    );
    fixture.assert_error(
        &format!("{LIVE}[environments.live.mounts.up]\npath = \"/srv/up\"\nexclud = []\n"),
        "environments.live.mounts.up.exclud",
        "unknown key",
    );
    fixture.assert_error(
        &format!("{LIVE}[environments.live.databases.db]\nkind = \"sqlite\"\npath = \"/srv/a.db\"\npassword = \"x\"\n"),
        "environments.live.databases.db.password",
        "unknown key",
    );
    fixture.assert_error(
        "[environments.live]\nversion = { file = \"/srv/V\", cmd = \"x\" }\n",
        "environments.live.version.cmd",
        "unknown key",
    );
}

#[test]
fn wrong_types() {
    let fixture = Fixture::new();
    fixture.assert_error(
        "[daemon]\nmax_jobs = \"4\"\n",
        "daemon.max_jobs",
        "wrong type: string \"4\", expected an integer",
    );
    fixture.assert_error(
        "[daemon]\ncatch_up = \"yes\"\n",
        "daemon.catch_up",
        "wrong type",
    );
    fixture.assert_error(
        &format!("{LIVE}schedule = \"0 3 * * *\"\n"),
        "environments.live.schedule",
        "expected a list",
    );
    fixture.assert_error(
        "[environments.live]\nversion = 2\n",
        "environments.live.version",
        "found integer `2`",
    );
    fixture.assert_error(
        &format!("{LIVE}[environments.live.databases.db]\nkind = \"mongo\"\n"),
        "environments.live.databases.db.kind",
        "unknown value `mongo`",
    );
}

#[test]
fn missing_required_keys() {
    let fixture = Fixture::new();
    fixture.assert_error(
        "[environments.live]\ncode = \"/srv/a\"\n",
        "environments.live.version",
        "missing required key",
    );
    fixture.assert_error(
        &format!("{LIVE}[environments.live.mounts.uploads]\nexclude = []\n"),
        "environments.live.mounts.uploads.path",
        "missing required key",
    );
}

#[test]
fn bad_cron_names_environment_and_expression() {
    let fixture = Fixture::new();
    let message = fixture.assert_error(
        &format!("{LIVE}schedule = [\"0 3 * * *\", \"0 3 * *\"]\n"),
        "environments.live.schedule[1]",
        "bad cron expression `0 3 * *`",
    );
    assert!(
        message.contains("standard 5-field cron `m h dom mon dow`, or 6 fields with seconds first")
    );
    fixture.assert_error(
        &format!("{LIVE}schedule = [\"0 27 * * *\"]\n"),
        "environments.live.schedule[0]",
        "`0 27 * * *`",
    );
}

#[test]
fn bad_durations() {
    let fixture = Fixture::new();
    fixture.assert_error(
        &format!("{LIVE}retention = \"14 days\"\n"),
        "environments.live.retention",
        "is not a duration",
    );
    fixture.assert_error(
        &format!("{LIVE}retention = \"0d\"\n"),
        "environments.live.retention",
        "must be positive",
    );
    fixture.assert_error(
        "[daemon]\ncommand_timeout = \"10\"\n",
        "daemon.command_timeout",
        "`10` is not a duration",
    );
}

#[test]
fn bad_daemon_values() {
    let fixture = Fixture::new();
    fixture.assert_error(
        "[daemon]\ntimezone = \"Europe/Berlim\"\n",
        "daemon.timezone",
        "unknown time zone `Europe/Berlim`",
    );
    fixture.assert_error(
        "[daemon]\nmax_jobs = 0\n",
        "daemon.max_jobs",
        "must be at least 1",
    );
    fixture.assert_error(
        "[daemon]\nhost = \"web 01\"\n",
        "daemon.host",
        "not a valid host id",
    );
    fixture.assert_error(
        "[daemon]\nstate_dir = \"var/lib\"\n",
        "daemon.state_dir",
        "not an absolute path",
    );
    fixture.assert_error(
        "[daemon]\nmetrics_listen = \"0.0.0.0:9477\"\n",
        "daemon.metrics_listen",
        "not a loopback address",
    );
    fixture.assert_error(
        "[daemon]\nmetrics_listen = \"localhost\"\n",
        "daemon.metrics_listen",
        "not an address",
    );
    fixture.assert_error(
        "[daemon]\non_failure = [\"notify 'oops\"]\n",
        "daemon.on_failure[0]",
        "cannot split command",
    );
}

#[test]
fn bad_store_values() {
    let fixture = Fixture::new();
    fixture.assert_error(
        "[store]\nurl = \"ftp://host/x\"\n",
        "store.url",
        "unsupported store scheme `ftp`",
    );
    fixture.assert_error(
        "[store]\nurl = \"/var/backups\"\n",
        "store.url",
        "is not a URL",
    );
    fixture.assert_error(
        "[store]\nurl = \"s3:///prefix\"\n",
        "store.url",
        "names no bucket",
    );
    fixture.assert_error(
        "[store]\ncompression = 22\n",
        "store.compression",
        "from 1 to 19, got 22",
    );
    fixture.assert_error(
        "[store]\nkey_file = \"store.key\"\n",
        "store.key_file",
        "not an absolute path",
    );
}

#[test]
fn bad_restore_and_import_values() {
    let fixture = Fixture::new();
    fixture.assert_error(
        "[restore]\non_interrupt = \"retry\"\n",
        "restore.on_interrupt",
        "`retry` is not one of: rollback, leave",
    );
    fixture.assert_error(
        "[import]\nmax_size = \"lots\"\n",
        "import.max_size",
        "`lots` is not a size: expected a number with a unit such as 500MiB or 64GiB",
    );
    fixture.assert_error(
        "[import]\nmax_size = \"0B\"\n",
        "import.max_size",
        "a size must be more than zero",
    );
}

#[test]
fn bad_names_and_principals() {
    let fixture = Fixture::new();
    fixture.assert_error(
        "[environments.\"-live\"]\nversion = \"1\"\n",
        "environments.-live",
        "not a valid environment name",
    );
    fixture.assert_error(
        &format!("{LIVE}[environments.live.mounts.\"up loads\"]\npath = \"/srv/up\"\n"),
        "environments.live.mounts.up loads",
        "not a valid part name",
    );
    fixture.assert_error(
        "[access]\nread = [\"team:ops\"]\n",
        "access.read[0]",
        "unknown principal kind `team`",
    );
    fixture.assert_error(
        &format!("{LIVE}[environments.live.access]\nrestore = [\"group:\"]\n"),
        "environments.live.access.restore[0]",
        "not a valid principal",
    );
}

#[test]
fn relative_paths_are_refused() {
    let fixture = Fixture::new();
    fixture.assert_error(
        &format!("{LIVE}code = \"srv/app\"\n"),
        "environments.live.code",
        "`srv/app` is not an absolute path",
    );
    fixture.assert_error(
        &format!("{LIVE}[environments.live.mounts.up]\npath = \"uploads\"\n"),
        "environments.live.mounts.up.path",
        "not an absolute path",
    );
    fixture.assert_error(
        &format!("{LIVE}[environments.live.databases.db]\nkind = \"sqlite\"\npath = \"app.db\"\n"),
        "environments.live.databases.db.path",
        "not an absolute path",
    );
    fixture.assert_error(
        "[environments.live]\nversion = { file = \"VERSION\" }\n",
        "environments.live.version.file",
        "not an absolute path",
    );
}

#[test]
fn two_parts_backing_up_one_directory() {
    let fixture = Fixture::new();
    let message = fixture.assert_error(
        &format!("{LIVE}code = \"/srv/live/app\"\n[environments.live.mounts.app]\npath = \"/srv/live/app/\"\n"),
        "environments.live.mounts.app.path",
        "two parts back up the same directory",
    );
    assert!(message.contains("code and files:app"), "{message}");
    fixture.assert_error(
        &format!(
            "{LIVE}[environments.live.databases.a]\nkind = \"sqlite\"\npath = \"/srv/x.db\"\n\
             [environments.live.databases.b]\nkind = \"sqlite\"\npath = \"/srv/x.db\"\n"
        ),
        "environments.live.databases.b.path",
        "two parts back up the same file",
    );
}

#[test]
fn bad_exclude_patterns() {
    let fixture = Fixture::new();
    let mount = format!("{LIVE}[environments.live.mounts.up]\npath = \"/srv/up\"\n");
    fixture.assert_error(
        &format!("{mount}exclude = [\"cache/[a\"]\n"),
        "environments.live.mounts.up.exclude[0]",
        "bad exclude pattern",
    );
    fixture.assert_error(
        &format!("{mount}exclude = [\"/tmp/**\"]\n"),
        "environments.live.mounts.up.exclude[0]",
        "relative",
    );
}

#[test]
fn databases_need_their_keys() {
    let fixture = Fixture::new();
    let db = |body: &str| format!("{LIVE}[environments.live.databases.db]\n{body}");
    fixture.assert_error(
        &db("kind = \"sqlite\"\n"),
        "environments.live.databases.db.path",
        "a sqlite database needs",
    );
    fixture.assert_error(
        &db("kind = \"postgres\"\nhost = \"db\"\n"),
        "environments.live.databases.db.database",
        "missing required key",
    );
    fixture.assert_error(
        &db("kind = \"mysql\"\n"),
        "environments.live.databases.db.database",
        "a mariadb database needs",
    );
    fixture.assert_error(
        &db("kind = \"redis\"\nsocket = \"/run/redis.sock\"\n"),
        "environments.live.databases.db.rdb_path",
        "missing required key",
    );
    fixture.assert_error(
        &db("kind = \"redis\"\nrdb_path = \"/var/lib/redis/dump.rdb\"\n"),
        "environments.live.databases.db.socket",
        "`socket` or `host`",
    );
    fixture.assert_error(
        &db("kind = \"sqlite\"\npath = \"/srv/a.db\"\nrdb_path = \"/x\"\n"),
        "environments.live.databases.db.rdb_path",
        "does not apply to a sqlite database",
    );
    fixture.assert_error(
        &db("kind = \"mariadb\"\ndatabase = \"x\"\nsocket = \"/run/m.sock\"\nhost = \"db\"\n"),
        "environments.live.databases.db.socket",
        "not both",
    );
    fixture.assert_error(
        &db("kind = \"postgres\"\ndatabase = \"x\"\nport = 70000\n"),
        "environments.live.databases.db.port",
        "expected a port number",
    );
}

#[test]
fn password_files_must_exist_and_be_private() {
    let fixture = Fixture::new();
    let secret = fixture.write("shop.pass", "hunter2\n");
    let body = format!(
        "{LIVE}[environments.live.databases.main]\nkind = \"postgres\"\ndatabase = \"shop\"\npassword_file = \"{}\"\n",
        secret.display()
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let key = "environments.live.databases.main.password_file";
    fixture.assert_error(&body, key, "is readable by everyone (mode 0644)");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    let config = fixture.load(&body).1.unwrap();
    assert_eq!(
        config.env("live").unwrap().databases["main"]
            .password_file
            .as_deref(),
        Some(secret.as_path())
    );
    std::fs::remove_file(&secret).unwrap();
    fixture.assert_error(&body, key, "No such file or directory");
}

#[test]
fn the_example_config_loads_as_is() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let config = Config::load_with_vars(&example, Vec::new()).unwrap();
    assert_eq!(config.path, example);
    assert_eq!(config.store.url, "file:///var/backups/envsnap");
    assert_eq!(config.daemon.socket_group.as_deref(), Some("envsnap"));
    let live = config.env("live").unwrap();
    assert_eq!(
        live.version,
        VersionSource::File("/srv/live/VERSION".into())
    );
    assert_eq!(live.schedule, ["0 0 3 * * *"]);
    assert_eq!(live.retention, Duration::from_secs(14 * 86_400));
    assert_eq!(live.databases["sessions"].kind, DatabaseKind::Sqlite);
    let parts: Vec<String> = live.parts().into_iter().map(|p| p.name).collect();
    assert_eq!(parts, ["code", "files:uploads", "database:sessions"]);
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn environment_overrides_apply() {
    let fixture = Fixture::new();
    let path = fixture.write(
        "envsnap.toml",
        &format!("[daemon]\nmax_jobs = 2\n{LIVE}schedule = [\"0 3 * * *\"]\n"),
    );
    let config = Config::load_with_vars(
        &path,
        vars(&[
            ("ENVSNAP_DAEMON__MAX_JOBS", "4"),
            ("ENVSNAP_DAEMON__TIMEZONE", "Europe/Berlin"),
            (
                "ENVSNAP_ENVIRONMENTS__LIVE__SCHEDULE",
                "[\"*/5 * * * *\", \"0 12 * * *\"]",
            ),
            (
                "ENVSNAP_ENVIRONMENTS__LIVE__VERSION",
                "{ command = \"cat /srv/live/VERSION\" }",
            ),
            ("ENVSNAP_ACCESS__READ", "group:ops"),
            ("ENVSNAP_SOCKET", "/tmp/not-a-config-key.sock"),
            ("HOME", "/root"),
        ]),
    )
    .unwrap();
    assert_eq!(config.daemon.max_jobs, 4);
    assert_eq!(config.daemon.timezone, chrono_tz::Europe::Berlin);
    let live = config.env("live").unwrap();
    assert_eq!(live.schedule, ["0 */5 * * * *", "0 0 12 * * *"]);
    assert_eq!(
        live.version,
        VersionSource::Command("cat /srv/live/VERSION".into())
    );
    assert_eq!(config.access.read.len(), 1);
}

#[test]
fn bad_overrides_name_the_variable() {
    let fixture = Fixture::new();
    let path = fixture.write("envsnap.toml", LIVE);
    let load = |pairs: &[(&str, &str)]| Config::load_with_vars(&path, vars(pairs)).unwrap_err();

    let error = load(&[("ENVSNAP_DAEMON__MAX_JOBZ", "4")]);
    assert!(
        matches!(&error, ConfigError::Variable { variable, .. } if variable == "ENVSNAP_DAEMON__MAX_JOBZ")
    );
    assert!(
        error.to_string().contains("no key `daemon.max_jobz`"),
        "{error}"
    );

    let error = load(&[("ENVSNAP_DAEMON__MAX_JOBS", "0")]);
    assert_eq!(
        error.to_string(),
        "environment variable ENVSNAP_DAEMON__MAX_JOBS: daemon.max_jobs: must be at least 1, got 0"
    );

    let error = load(&[("ENVSNAP_ENVIRONMENTS__LIVE__SCHEDULE", "0 3 * *")]);
    let ConfigError::Invalid { origin, key, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(
        origin,
        &ConfigOrigin::Variable("ENVSNAP_ENVIRONMENTS__LIVE__SCHEDULE".into())
    );
    assert_eq!(key, "environments.live.schedule[0]");

    // A variable that creates a new environment without a version.
    let error = load(&[("ENVSNAP_ENVIRONMENTS__STAGING__RETENTION", "2d")]);
    assert_eq!(
        error.to_string(),
        "environment variable ENVSNAP_ENVIRONMENTS__STAGING__RETENTION: environments.staging.version: missing required key"
    );

    let error = load(&[("ENVSNAP_STORE__COMPRESSION", "high")]);
    assert!(
        error
            .to_string()
            .contains("expected an integer, got `high`"),
        "{error}"
    );
}

/// The only test that sets an `ENVSNAP_*` variable in the process environment (tests
/// run in parallel; the others pass their variables to `load_with_vars`, and the
/// daemons the end-to-end tests start do not inherit `ENVSNAP_*` variables).
#[test]
fn load_reads_the_process_environment() {
    let fixture = Fixture::new();
    let path = fixture.write("envsnap.toml", "[daemon]\ncatch_up = true\n");
    // SAFETY: no other test writes this variable, and the tests read the environment
    // (temp dir, AWS_* settings) only through std, which serializes access with
    // `set_var`.
    unsafe { std::env::set_var("ENVSNAP_DAEMON__CATCH_UP", "false") };
    let result = Config::load(&path);
    unsafe { std::env::remove_var("ENVSNAP_DAEMON__CATCH_UP") };
    assert!(!result.unwrap().daemon.catch_up);
}

#[test]
fn bad_drill_settings_are_named() {
    let fixture = Fixture::new();
    let db = "[environments.live.databases.main]\nkind = \"sqlite\"\npath = \"/srv/main.db\"\n\
              [environments.live.databases.cache]\nkind = \"redis\"\nsocket = \"/run/redis.sock\"\n\
              rdb_path = \"/var/lib/redis/dump.rdb\"\n";
    let with = |drill: &str| format!("{LIVE}{db}[environments.live.drill]\n{drill}");
    fixture.assert_error(
        &with("schedule = [\"61 * * * *\"]\n"),
        "environments.live.drill.schedule[0]",
        "",
    );
    fixture.assert_error(
        &with("checks = { shop = [\"SELECT 1\"] }\n"),
        "environments.live.drill.checks.shop",
        "the environment has no database `shop`",
    );
    fixture.assert_error(
        &with("checks = { cache = [\"SELECT 1\"] }\n"),
        "environments.live.drill.checks.cache",
        "Redis has no SQL: use drill.commands with $ENVSNAP_DRILL_<NAME>_SOCKET",
    );
    fixture.assert_error(
        &with("checks = { main = [\" \"] }\n"),
        "environments.live.drill.checks.main[0]",
        "the query is empty",
    );
    fixture.assert_error(
        &with("shrink_warning = 1.5\n"),
        "environments.live.drill.shrink_warning",
        "must be a fraction from 0 to 1, got 1.5",
    );
    fixture.assert_error(
        &with("load_timeout = \"0s\"\n"),
        "environments.live.drill.load_timeout",
        "the duration must be positive",
    );
    fixture.assert_error(
        &format!("[daemon]\ndrill_user = \"root\"\n{LIVE}"),
        "daemon.drill_user",
        "`root` cannot run scratch servers: name an unprivileged user",
    );
    let (_, good) = fixture.load(&with(
        "schedule = [\"0 5 * * 0\"]\nchecks = { main = [\"SELECT 1\"] }\ntimeout = \"10m\"\n",
    ));
    let drill = &good.unwrap().environments["live"].drill;
    assert_eq!(drill.timeout, Duration::from_secs(600));
    assert_eq!(drill.load_timeout, Duration::from_secs(6 * 3600));
    assert_eq!(drill.schedule.len(), 1);
}
