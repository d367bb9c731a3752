//! End to end: PostgreSQL, MariaDB and Redis parts through the real envsnapd and
//! envsnapctl, against real throwaway servers (tests/support/servers.rs).
//!
//! Each test backs an environment up, changes its data heavily (dropping tables),
//! restores it and compares the content exactly; checks that a failing dump fails the
//! backup and lists nothing; and that the database's password appears neither in `ps`
//! output during the backup nor in the daemon's log. A test whose server binaries are
//! missing prints a note and passes (CI installs them, see .ci/run).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::support::daemon::{TestDaemon, make_environments, standard_config};
use crate::support::servers;

/// Outside CI a missing server skips the test; in CI (`CI` set, as .ci/run does) it
/// is a failure, so the tests cannot silently stop running there.
fn skip(what: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is not installed, but CI must run the database tests (see .ci/run)"
    );
    eprintln!("note: {what} is not installed; skipping (CI installs it)");
}

/// A daemon whose `live` environment also has `extra` (database parts and more).
fn daemon_with(extra: impl FnOnce(&Path) -> String) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    let extra = extra(dir.path());
    TestDaemon::start_in(dir, |d| standard_config(d, &extra))
}

/// Runs `backup create` while watching `ps` for `password`; returns the job JSON.
fn backup_watching_ps(
    daemon: &TestDaemon,
    env: &str,
    name: &str,
    password: &str,
) -> serde_json::Value {
    let done = Arc::new(AtomicBool::new(false));
    let seen = {
        let (done, password) = (done.clone(), password.to_owned());
        std::thread::spawn(move || {
            let mut polls = 0;
            while !done.load(Ordering::Relaxed) {
                let out = Command::new("ps").args(["-eo", "args"]).output().unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                if let Some(line) = text.lines().find(|l| l.contains(&password)) {
                    return Err(line.to_owned());
                }
                polls += 1;
            }
            Ok(polls)
        })
    };
    let job = daemon.ctl(&["--json", "backup", "create", env, "--name", name, "--wait"]);
    done.store(true, Ordering::Relaxed);
    let polls = seen.join().unwrap();
    assert!(polls.is_ok(), "password on a command line: {polls:?}");
    let job = job.ok().json();
    assert!(
        !daemon.log().contains(password),
        "the password is in the daemon's log"
    );
    let leftovers: Vec<_> = std::fs::read_dir(daemon.path("state/tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "credential files left: {leftovers:?}");
    job
}

/// A backup of `env` fails, naming the database and `expected`; nothing is listed.
fn assert_backup_fails(daemon: &TestDaemon, env: &str, database: &str, expected: &str) {
    let failed = daemon.ctl(&["backup", "create", env, "--name", "doomed", "--wait"]);
    assert_ne!(
        failed.status, 0,
        "the backup should fail: {}",
        failed.stdout
    );
    let message = format!("{}{}", failed.stdout, failed.stderr);
    assert!(message.contains(database), "{message}");
    assert!(message.contains(expected), "{message}");
    let list = daemon.json(&["backup", "list", env]);
    let names: Vec<_> = list
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .filter(|b| b["name"] == "doomed")
        .cloned()
        .collect();
    assert!(names.is_empty(), "a failed backup is listed: {list}");
}

fn restore(daemon: &TestDaemon, backup: &str) {
    let job = daemon.ctl(&["--json", "restore", "live", backup, "--yes", "--wait"]);
    assert_eq!(
        job.status,
        0,
        "restore failed: {}{}\nlog: {}",
        job.stdout,
        job.stderr,
        daemon.log()
    );
}

// ---------------------------------------------------------------- PostgreSQL

/// The restore of `live`'s backup `good` with no safety backup first.
const RESTORE_GOOD_UNSAFELY: [&str; 6] = [
    "restore",
    "live",
    "good",
    "--yes",
    "--wait",
    "--no-safety-backup",
];

const PG_TYPES: &str = "
CREATE TABLE every_type (
    id int PRIMARY KEY, big bigint, amount numeric(20,6), label text, raw bytea,
    at timestamptz, doc jsonb, uid uuid, tags text[], scores int[], flag boolean
);
INSERT INTO every_type VALUES
 (1, 9223372036854775807, 12345678901234.123456, 'plain', '\\x00ff10', '2026-11-24 03:00:00+01',
  '{\"a\": [1, 2, {\"b\": null}]}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{x,\"y z\",NULL}', '{1,2,3}', true),
 (2, -1, -0.000001, E'tab\\tnew\\nline ünïcode', decode(repeat('00ff', 500), 'hex'), 'infinity',
  '[]', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '{}', NULL, false),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
";

/// Every table's name and the md5 of its rows in a stable order.
fn pg_fingerprint(pg: &servers::Postgres, database: &str) -> String {
    let tables = pg.sql(
        database,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    );
    let mut out = String::new();
    for table in tables.lines() {
        let sums = pg.sql(
            database,
            &format!(
                "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"
            ),
        );
        out.push_str(&format!("{table}: {sums}"));
    }
    out
}

#[test]
fn postgres_backup_restore_and_failures() {
    let Some(pg) = servers::Postgres::start() else {
        return skip("PostgreSQL 15");
    };
    pg.superuser("CREATE DATABASE shop OWNER app");
    pg.pgbench_init("shop", 1);
    pg.sql("shop", PG_TYPES);
    let before = pg_fingerprint(&pg, "shop");
    assert!(before.contains("pgbench_accounts: 100000|"), "{before}");

    let daemon = daemon_with(|dir| {
        servers::password_file(&dir.join("pg.pass"), &pg.password);
        format!(
            r#"
[environments.live.databases.shop]
kind = "postgres"
database = "shop"
host = "{socket}"
user = "app"
password_file = "{dir}/pg.pass"

[environments.broken]
version = "1"
[environments.broken.databases.gone]
kind = "postgres"
database = "no_such_database"
host = "{socket}"
user = "app"
password_file = "{dir}/pg.pass"
"#,
            socket = pg.socket_dir().display(),
            dir = dir.display()
        )
    });

    let started = std::time::Instant::now();
    let job = backup_watching_ps(&daemon, "live", "good", &pg.password);
    let backup_time = started.elapsed();
    assert_eq!(job["job"]["state"], "succeeded", "{job}");
    let part = job["backup"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["part"] == "database:shop")
        .cloned()
        .unwrap_or_else(|| panic!("no database part: {job}"));
    assert!(part["size"].as_u64().unwrap() > 1_000_000, "{part}");
    let parts = job["backup"]["parts"].to_string();
    assert!(parts.contains("\"database:shop/roles\""), "{parts}");

    // A download is a file pg_restore reads as is; the roles are a plain SQL script.
    let dump = daemon.path("shop.dump");
    let roles = daemon.path("shop-roles.sql");
    for (part, file) in [("database:shop", &dump), ("database:shop/roles", &roles)] {
        let args = ["backup", "download", "live", "good", "--part", part, "-o"];
        let mut args = args.to_vec();
        args.push(file.to_str().unwrap());
        daemon.ctl(&args).ok();
    }
    let listed = Command::new(pg.bin.join("pg_restore"))
        .arg("--list")
        .arg(&dump)
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("TABLE DATA public pgbench_accounts"));
    let script = std::fs::read_to_string(&roles).unwrap();
    assert!(script.contains("CREATE ROLE app;"), "{script}");
    assert!(
        !script.contains(&pg.password) && !script.contains("SCRAM-SHA-256"),
        "{script}"
    );

    // Heavy changes: rows updated and deleted, a table dropped, one added.
    pg.sql(
        "shop",
        "UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid % 3 = 0;
         DELETE FROM pgbench_tellers WHERE tid > 2;
         DROP TABLE every_type;
         CREATE TABLE intruder (x int); INSERT INTO intruder VALUES (1);",
    );
    assert_ne!(pg_fingerprint(&pg, "shop"), before);

    let started = std::time::Instant::now();
    restore(&daemon, "good");
    let restore_time = started.elapsed();
    assert_eq!(pg_fingerprint(&pg, "shop"), before);
    let databases = pg.superuser("SELECT datname FROM pg_database ORDER BY 1");
    assert!(
        !databases.contains("envsnap"),
        "temporary databases left: {databases}"
    );
    assert_eq!(
        pg.sql(
            "shop",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop'"
        ),
        "app\n"
    );
    eprintln!(
        "postgres (pgbench scale 1): backup {backup_time:?}, restore (with safety backup) {restore_time:?}"
    );

    // A database dropped since the backup is created again by the restore.
    pg.superuser("DROP DATABASE shop");
    let job = daemon.ctl(&RESTORE_GOOD_UNSAFELY);
    assert_eq!(job.status, 0, "{}{}", job.stdout, job.stderr);
    assert_eq!(pg_fingerprint(&pg, "shop"), before);

    // A load that fails with most of the dump still to send (`app`'s sessions are
    // read-only outside `postgres`, so pg_restore's first CREATE fails): the restore
    // ends with pg_restore's own line instead of waiting on a reader that has gone,
    // `shop` is left as it was and the staged database is dropped.
    pg.sql(
        "shop",
        "CREATE TABLE marker (x int); INSERT INTO marker VALUES (1);",
    );
    let current = pg_fingerprint(&pg, "shop");
    pg.superuser(
        "ALTER ROLE app SET default_transaction_read_only = on;
         ALTER ROLE app IN DATABASE postgres SET default_transaction_read_only = off;",
    );
    let failed = daemon.ctl(&RESTORE_GOOD_UNSAFELY);
    pg.superuser(
        "ALTER ROLE app RESET default_transaction_read_only;
         ALTER ROLE app IN DATABASE postgres RESET default_transaction_read_only;",
    );
    assert_ne!(failed.status, 0, "{}", failed.stdout);
    assert!(
        failed.stderr.contains("pg_restore")
            && failed.stderr.contains("read-only transaction")
            && failed.stderr.contains("database shop was left as it was"),
        "{}",
        failed.stderr
    );
    assert_eq!(pg_fingerprint(&pg, "shop"), current);
    let databases = pg.superuser("SELECT datname FROM pg_database ORDER BY 1");
    assert!(!databases.contains("envsnap"), "{databases}");

    // A database that does not exist: the backup fails with pg_dump's own line.
    assert_backup_fails(&daemon, "broken", "gone", "no_such_database");
    // The server down: the backup of `live` fails too, and nothing is listed.
    pg.stop();
    assert_backup_fails(&daemon, "live", "shop", "pg_dump");
    assert!(!daemon.log().contains(&pg.password));
}

/// The roles a database uses come back with it: a restore onto a server that lost
/// them creates them (attributes, comment, membership; the dump's grants then apply),
/// and leaves roles that exist as they are.
#[test]
fn postgres_restore_creates_missing_roles() {
    let Some(pg) = servers::Postgres::start() else {
        return skip("PostgreSQL 15");
    };
    pg.superuser("CREATE DATABASE crm OWNER app");
    pg.superuser("CREATE ROLE reporting NOLOGIN");
    pg.superuser("COMMENT ON ROLE reporting IS 'read-only reports'");
    pg.superuser("CREATE ROLE analyst LOGIN IN ROLE reporting");
    pg.superuser("CREATE ROLE keeper NOLOGIN");
    pg.sql(
        "crm",
        "CREATE TABLE reports (id int PRIMARY KEY, body text);
         INSERT INTO reports SELECT g, 'report ' || g FROM generate_series(1, 500) g;
         GRANT SELECT ON reports TO reporting;",
    );
    let daemon = daemon_with(|_| {
        format!(
            r#"
[environments.crm]
version = "1"
[environments.crm.databases.crm]
kind = "postgres"
database = "crm"
host = "{socket}"
user = "postgres"
"#,
            socket = pg.socket_dir().display(),
        )
    });
    let job = daemon.json(&["backup", "create", "crm", "--name", "roles", "--wait"]);
    assert_eq!(job["job"]["state"], "succeeded", "{job}");

    // The server loses the roles; an existing role changes after the backup.
    pg.sql(
        "crm",
        "REVOKE SELECT ON reports FROM reporting; DELETE FROM reports",
    );
    pg.superuser("DROP ROLE analyst");
    pg.superuser("DROP ROLE reporting");
    pg.superuser("ALTER ROLE keeper LOGIN");

    let restored = daemon.ctl(&["restore", "crm", "roles", "--yes", "--wait"]);
    assert_eq!(restored.status, 0, "{}{}", restored.stdout, restored.stderr);
    assert_eq!(
        pg.superuser(
            "SELECT rolname, rolcanlogin, pg_has_role(rolname, 'reporting', 'MEMBER'),
                    coalesce(shobj_description(oid, 'pg_authid'), '-')
             FROM pg_roles WHERE rolname IN ('analyst', 'keeper', 'reporting') ORDER BY 1"
        ),
        "analyst|t|t|-\nkeeper|t|f|-\nreporting|f|t|read-only reports\n"
    );
    assert_eq!(
        pg.sql(
            "crm",
            "SELECT count(*), has_table_privilege('reporting', 'reports', 'SELECT') FROM reports"
        ),
        "500|t\n"
    );
}

// ---------------------------------------------------------------- MariaDB

const MARIADB_SCHEMA: &str = r#"
CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
USE shop;
CREATE TABLE items (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100), price DECIMAL(10,2),
                    blob_data BLOB, created DATETIME(6), doc JSON) ENGINE=InnoDB;
CREATE TABLE audit (id INT PRIMARY KEY AUTO_INCREMENT, item_id INT, note TEXT);
CREATE VIEW expensive AS SELECT id, name FROM items WHERE price > 10;
CREATE TRIGGER items_audit AFTER INSERT ON items FOR EACH ROW
    INSERT INTO audit (item_id, note) VALUES (NEW.id, CONCAT('added ', NEW.name));
CREATE FUNCTION double_price(p DECIMAL(10,2)) RETURNS DECIMAL(10,2) DETERMINISTIC RETURN p * 2;
CREATE PROCEDURE count_items(OUT n INT) SELECT COUNT(*) INTO n FROM items;
INSERT INTO items (name, price, blob_data, created, doc) VALUES
    ('tea', 3.50, UNHEX('00FF0A0D275C22'), '2026-11-24 03:00:00.123456', '{"k": [1, 2]}'),
    ('ünïcode ☕', 12.00, UNHEX(REPEAT('DEADBEEF00', 2000)), NOW(6), NULL),
    ('quote''s', 99.99, NULL, NULL, '{}');
"#;

fn mariadb_fingerprint(db: &servers::Mariadb) -> String {
    db.root(
        "USE shop;
         SELECT id, name, price, HEX(blob_data), created, doc FROM items ORDER BY id;
         SELECT * FROM audit ORDER BY id;
         SELECT * FROM expensive ORDER BY id;
         SELECT double_price(price) FROM items ORDER BY id;
         CALL count_items(@n); SELECT @n;
         SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'shop';
         SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'shop' ORDER BY 1;
         SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'shop' ORDER BY 1;
         SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'shop';",
    )
}

#[test]
fn mariadb_backup_restore_and_failures() {
    let Some(mut db) = servers::Mariadb::start() else {
        return skip("MariaDB");
    };
    db.app(MARIADB_SCHEMA); // as `app`, so it is the definer of the routines
    let before = mariadb_fingerprint(&db);
    assert!(before.contains("DEADBEEF00DEADBEEF"), "{before}");

    let daemon = daemon_with(|dir| {
        servers::password_file(&dir.join("maria.pass"), &db.password);
        format!(
            r#"
[environments.live.databases.shop]
kind = "mariadb"
database = "shop"
socket = "{socket}"
user = "app"
password_file = "{dir}/maria.pass"

[environments.broken]
version = "1"
[environments.broken.databases.gone]
kind = "mariadb"
database = "no_such_database"
socket = "{socket}"
user = "app"
password_file = "{dir}/maria.pass"
"#,
            socket = db.socket().display(),
            dir = dir.display()
        )
    });

    let started = std::time::Instant::now();
    let job = backup_watching_ps(&daemon, "live", "good", &db.password);
    let backup_time = started.elapsed();
    assert_eq!(job["job"]["state"], "succeeded", "{job}");

    db.root(
        "USE shop; DELETE FROM items WHERE id = 1; UPDATE items SET blob_data = NULL;
         DROP VIEW expensive; DROP TABLE audit; DROP PROCEDURE count_items;
         CREATE TABLE intruder (x INT);",
    );
    assert_eq!(db.root("SELECT COUNT(*) FROM shop.items"), "2\n");

    let started = std::time::Instant::now();
    restore(&daemon, "good");
    let restore_time = started.elapsed();
    assert_eq!(mariadb_fingerprint(&db), before);
    eprintln!("mariadb: backup {backup_time:?}, restore (with safety backup) {restore_time:?}");

    assert_backup_fails(&daemon, "broken", "gone", "no_such_database");
    db.stop();
    assert_backup_fails(&daemon, "live", "shop", "mariadb-dump");
    assert!(!daemon.log().contains(&db.password));
}

// ---------------------------------------------------------------- Redis

fn redis_fingerprint(redis: &servers::Redis) -> String {
    let mut keys: Vec<String> = redis
        .cli(&["KEYS", "*"])
        .lines()
        .map(str::to_owned)
        .collect();
    keys.sort();
    let mut out = String::new();
    for key in keys {
        let kind = redis.cli(&["TYPE", &key]);
        let value = match kind.trim() {
            "string" => redis.cli(&["GET", &key]),
            "hash" => redis.cli(&["HGETALL", &key]),
            "list" => redis.cli(&["LRANGE", &key, "0", "-1"]),
            "set" => {
                let mut members: Vec<_> = redis
                    .cli(&["SMEMBERS", &key])
                    .lines()
                    .map(str::to_owned)
                    .collect();
                members.sort();
                members.join("\n")
            }
            other => panic!("unexpected type {other}"),
        };
        let ttl: i64 = redis.cli(&["TTL", &key]).trim().parse().unwrap();
        let expiry = if ttl > 0 { "expires" } else { "persistent" };
        out.push_str(&format!("{key} {} {expiry}: {value}\n", kind.trim()));
    }
    out
}

#[test]
fn redis_backup_restore_and_failures() {
    let Some(redis) = servers::Redis::start() else {
        return skip("Redis");
    };
    redis.cli(&["SET", "greeting", "hello\nworld"]);
    redis.cli(&["SET", "binary", "\u{1}\u{ff}\u{7f}x"]);
    redis.cli(&["HSET", "user:1", "name", "Ada", "lang", "en"]);
    redis.cli(&["RPUSH", "queue", "a", "b", "c", "a"]);
    redis.cli(&["SADD", "tags", "x", "y", "z"]);
    redis.cli(&["SET", "session", "temp", "EX", "3600"]);
    redis.cli(&["EXPIRE", "queue", "7200"]);
    let before = redis_fingerprint(&redis);
    assert!(before.contains("session string expires"), "{before}");

    let daemon = daemon_with(|dir| {
        format!(
            r#"
[environments.live.databases.cache]
kind = "redis"
socket = "{socket}"
password_file = "{redis_dir}/password"
rdb_path = "{rdb}"
stop = ["{stop}"]
start = ["{start}"]

[environments.broken]
version = "1"
[environments.broken.databases.gone]
kind = "redis"
socket = "{dir}/no-such.sock"
rdb_path = "{dir}/nothing.rdb"
"#,
            socket = redis.socket().display(),
            redis_dir = redis.dir.path().display(),
            rdb = redis.rdb_path().display(),
            stop = redis
                .stop_command()
                .replace('\\', "\\\\")
                .replace('"', "\\\""),
            start = redis.start_command(),
            dir = dir.display()
        )
    });

    let job = backup_watching_ps(&daemon, "live", "good", &redis.password);
    assert_eq!(job["job"]["state"], "succeeded", "{job}");

    redis.cli(&["FLUSHALL"]);
    redis.cli(&["SET", "greeting", "changed"]);
    redis.cli(&["RPUSH", "other", "1"]);
    assert_ne!(redis_fingerprint(&redis), before);

    restore(&daemon, "good");
    assert_eq!(redis_fingerprint(&redis), before);
    // The stored part is a plain RDB file (no replication marker after it).
    let rdb = std::fs::read(redis.rdb_path()).unwrap();
    assert!(rdb.starts_with(b"REDIS"));
    assert_eq!(
        rdb[rdb.len() - 9],
        0xff,
        "the file ends with EOF + checksum"
    );

    assert_backup_fails(&daemon, "broken", "gone", "redis-cli");
    assert!(!daemon.log().contains(&redis.password));
}
