//! End to end: restore drills through the real envsnapd and envsnapctl, with real
//! PostgreSQL, MariaDB and Redis servers, SQLite and trees.
//!
//! A drill of a good backup passes with the right figures and leaves the live
//! environment byte for byte as it was; its report is in the store and comes back
//! after `catalog rebuild`; metrics show it. A failing operator check, an emptied
//! table and a corrupted pack each show in the report, naming what is wrong. A kill
//! -9 mid-drill, then a restart, leaves no scratch server and no sandbox. A drill
//! schedule fires.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::metrics_e2e::{free_address, get};
use crate::support::daemon::{TestDaemon, make_environments, standard_config};
use crate::support::servers;

fn skip(what: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is not installed, but CI must run the drill tests (see .ci/run)"
    );
    eprintln!("note: {what} is not installed; skipping (CI installs it)");
}

fn wait_until(what: &str, seconds: u64, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every path under `root` with its type, mode, owner, size, mtime and content.
fn tree_fingerprint(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut found = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for item in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = item.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let content = if meta.is_file() {
                format!("{:?}", blake3::hash(&std::fs::read(&path).unwrap()))
            } else if meta.is_dir() {
                pending.push(path.clone());
                String::new()
            } else {
                format!("{:?}", std::fs::read_link(&path).ok())
            };
            let line = format!(
                "{:o} {}:{} {} {}.{} {content}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.len(),
                meta.mtime(),
                meta.mtime_nsec()
            );
            found.insert(path, line);
        }
    }
    found
}

/// Processes whose command line mentions `needle`.
/// Processes whose command line holds `needle` and whose files (open descriptors,
/// working directory) lie under `dir`: scratch servers of other tests running at the
/// same time are not this daemon's.
fn processes_with(needle: &str, dir: &Path) -> Vec<String> {
    let out = Command::new("ps")
        .args(["-eo", "pid,args"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle) && !l.contains("ps -eo"))
        .filter(|l| {
            let pid = l.split_whitespace().next().unwrap_or_default();
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten();
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
            let mut files = (fds.flatten())
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .chain(cwd);
            l.contains(&dir.display().to_string()) || files.any(|f| f.starts_with(dir))
        })
        .map(str::to_owned)
        .collect()
}

fn drills_dir(daemon: &TestDaemon) -> Vec<String> {
    std::fs::read_dir(daemon.path("state/drills"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for item in std::fs::read_dir(&dir).unwrap().flatten() {
            if item.file_type().unwrap().is_dir() {
                pending.push(item.path());
            } else {
                found.push(item.path());
            }
        }
    }
    found
}

fn drill(daemon: &TestDaemon, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all = vec!["--json", "drill"];
    all.extend_from_slice(args);
    let out = daemon.ctl(&all);
    let json = serde_json::from_str(&out.stdout).unwrap_or_default();
    (out.status, json, out.stderr)
}

const PG_SHOP: &str = "
CREATE TABLE orders (id int PRIMARY KEY, total numeric, note text);
INSERT INTO orders SELECT g, g * 1.5, 'order ' || g FROM generate_series(1, 250) g;
CREATE TABLE audit (id serial PRIMARY KEY, at timestamptz DEFAULT now());
INSERT INTO audit DEFAULT VALUES;
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
";

const MARIADB_SHOP: &str = "
USE shop;
CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(10,2));
CREATE TABLE audit (item_id INT, note TEXT);
CREATE TRIGGER items_audit AFTER INSERT ON items FOR EACH ROW
    INSERT INTO audit VALUES (NEW.id, CONCAT('added ', NEW.name));
CREATE PROCEDURE count_items(OUT n INT) SELECT COUNT(*) INTO n FROM items;
CREATE VIEW expensive AS SELECT id FROM items WHERE price > 10;
INSERT INTO items VALUES (1, 'lamp', 9.50), (2, 'desk', 120.00), (3, 'chair', 45.25);
CREATE TABLE empty_one (x INT);
";

fn live_fingerprints(
    daemon: &TestDaemon,
    pg: &servers::Postgres,
    maria: &servers::Mariadb,
    redis: &servers::Redis,
) -> String {
    format!(
        "{:?}\n{}\n{}\n{}\n{}",
        tree_fingerprint(&daemon.path("live")),
        pg.sql("shop", "SELECT count(*), sum(total), max(note) FROM orders"),
        pg.superuser("SELECT datname FROM pg_database ORDER BY 1"),
        maria.root("SELECT COUNT(*), SUM(price) FROM shop.items; SHOW DATABASES;"),
        redis.cli(&["DBSIZE"]),
    )
}

#[test]
fn a_drill_restores_every_part_into_a_sandbox_and_proves_it() {
    let (Some(pg), Some(maria), Some(redis)) = (
        servers::Postgres::start(),
        servers::Mariadb::start(),
        servers::Redis::start(),
    ) else {
        return skip("PostgreSQL 15, MariaDB or Redis");
    };
    pg.superuser("CREATE DATABASE shop OWNER app");
    pg.sql("shop", PG_SHOP);
    maria.root("CREATE DATABASE shop");
    // As `app`: the definer of the trigger, routine and view, as on a real server.
    maria.app(MARIADB_SHOP);
    for i in 0..40 {
        redis.cli(&["SET", &format!("key:{i}"), "v"]);
    }
    let metrics = free_address();
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    let extra = |d: &Path| {
        servers::password_file(&d.join("pg.pass"), &pg.password);
        servers::password_file(&d.join("maria.pass"), &maria.password);
        format!(
            r#"
[environments.live.databases.shop]
kind = "postgres"
database = "shop"
host = "{pg}"
user = "app"
password_file = "{d}/pg.pass"

[environments.live.databases.stock]
kind = "mariadb"
database = "shop"
socket = "{maria}"
user = "app"
password_file = "{d}/maria.pass"

[environments.live.databases.cache]
kind = "redis"
socket = "{redis}"
password_file = "{redis_dir}/password"
rdb_path = "{redis_dir}/dump.rdb"

[environments.live.drill]
checks = {{ shop = ["SELECT count(*) = 250 FROM orders", "SELECT count(*) > 0 FROM big_orders"], stock = ["SELECT COUNT(*) = 3 FROM items", "SELECT COUNT(*) = 2 FROM expensive"], main = ["SELECT count(*) = 3 FROM t"] }}
commands = ["sh -c 'test -f \"$ENVSNAP_DRILL_CODE/index.php\" && test -S \"$ENVSNAP_DRILL_SHOP_SOCKET/.s.PGSQL.5432\" && test -S \"$ENVSNAP_DRILL_CACHE_SOCKET\" && test \"$ENVSNAP_KIND\" = drill'"]
"#,
            pg = pg.socket_dir().display(),
            maria = maria.socket().display(),
            redis = redis.socket().display(),
            redis_dir = redis.dir.path().display(),
            d = d.display()
        )
    };
    let daemon = TestDaemon::start_in(dir, |d| {
        standard_config(d, &extra(d)).replacen(
            "[daemon]\n",
            &format!("[daemon]\nmetrics_listen = \"{metrics}\"\n"),
            1,
        )
    });
    daemon
        .ctl(&["backup", "create", "live", "--name", "good", "--wait"])
        .ok();
    let before = live_fingerprints(&daemon, &pg, &maria, &redis);

    let (status, drilled, stderr) = drill(&daemon, &["live", "--wait"]);
    assert_eq!(status, 0, "{stderr}\n{drilled}\n{}", daemon.log());
    let report = &drilled["report"];
    assert_eq!(drilled["outcome"], "passed", "{drilled}");
    assert_eq!(report["backup"], "good");
    let part = |name: &str| {
        report["parts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["part"] == name)
            .unwrap_or_else(|| panic!("no part {name} in {report}"))
            .clone()
    };
    assert_eq!(
        part("database:shop")["database"]["tables"]["public.orders"],
        250
    );
    assert_eq!(
        part("database:shop")["database"]["tables"]["public.audit"],
        1
    );
    assert_eq!(part("database:stock")["database"]["tables"]["items"], 3);
    assert_eq!(part("database:stock")["database"]["tables"]["empty_one"], 0);
    assert_eq!(part("database:stock")["database"]["tables"]["audit"], 3);
    assert_eq!(part("database:cache")["database"]["keys"], 40);
    assert_eq!(part("database:cache")["keys_at_backup"], 40);
    assert_eq!(report["warnings"], serde_json::json!([]), "{report}");
    assert_eq!(part("database:main")["database"]["integrity"], "ok");
    assert_eq!(part("database:main")["database"]["tables"]["t"], 3);
    assert_eq!(part("code")["tree"]["files"], 2);
    assert_eq!(part("files:uploads")["tree"]["bytes"], 50_000);
    assert_eq!(report["checks"].as_array().unwrap().len(), 5, "{report}");
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["outcome"] == "passed"),
        "{report}"
    );
    assert_eq!(report["commands"][0]["outcome"], "passed", "{report}");

    // The environment was never touched; nothing of the drill is left.
    assert_eq!(live_fingerprints(&daemon, &pg, &maria, &redis), before);
    assert!(drills_dir(&daemon).is_empty(), "{:?}", drills_dir(&daemon));
    assert!(
        processes_with(
            &daemon.path("state").display().to_string(),
            &daemon.path("")
        )
        .is_empty()
    );
    assert!(processes_with("/proc/self/fd/3", &daemon.path("")).is_empty());

    // The evidence: env show, the activity log, metrics, and the store.
    let env = daemon.json(&["env", "show", "live"]);
    assert_eq!(env["last_drill"], "passed", "{env}");
    let log = daemon.json(&["log", "live"]);
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "drill" && e["outcome"] == "succeeded"),
        "{log}"
    );
    let (_, scraped) = get(metrics, "/metrics");
    assert!(
        scraped.contains("envsnap_drill_last_success_timestamp_seconds{env=\"live\"}"),
        "{scraped}"
    );
    assert!(
        scraped.contains("envsnap_drill_failures_total{env=\"live\"} 0"),
        "{scraped}"
    );
    let stored = std::fs::read_dir(daemon.path("store/test-host/drills/live"))
        .unwrap()
        .count();
    assert_eq!(stored, 1, "one backup with a report in the store");

    // A fresh catalog: `catalog rebuild` brings the drill back from the store.
    let id = drilled["id"].as_i64().unwrap();
    let mut daemon = daemon;
    daemon.signal_and_wait(Signal::SIGTERM);
    for name in ["catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"] {
        let _ = std::fs::remove_file(daemon.path("state").join(name));
    }
    daemon.spawn();
    assert!(
        daemon
            .json(&["drill", "list", "live"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    let rebuilt = daemon.json(&["catalog", "rebuild"]);
    assert_eq!(rebuilt["drills"], 1, "{rebuilt}");
    let back = daemon.json(&["drill", "show", &id.to_string()]);
    assert_eq!(back["report"]["parts"], drilled["report"]["parts"]);
    let human = daemon.ctl(&["drill", "show", &id.to_string()]).ok().stdout;
    assert!(human.contains("part database:shop:"), "{human}");
}

#[test]
fn a_drill_names_a_failing_check_warns_of_an_emptied_table_and_fails_on_a_corrupt_pack() {
    let drill_config =
        "\n[environments.live.drill]\nchecks = { main = [\"SELECT count(*) >= 0 FROM t\"] }\n";
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    let mut daemon = TestDaemon::start_in(dir, |d| {
        let hook = format!(
            "on_failure = [\"sh -c 'echo $ENVSNAP_KIND $ENVSNAP_BACKUP >> {}/failed.out'\"]",
            d.display()
        );
        standard_config(d, drill_config).replace("max_jobs = 2", &format!("max_jobs = 2\n{hook}"))
    });
    daemon
        .ctl(&["backup", "create", "live", "--name", "full", "--wait"])
        .ok();
    let (status, first, _) = drill(&daemon, &["live", "--wait"]);
    assert_eq!(status, 0, "{first}");
    assert!(first["report"]["warnings"].as_array().unwrap().is_empty());

    // An emptied table: a valid backup, a passed drill, and a warning.
    let db = daemon.path("live/data/main.db");
    let emptied = Command::new("sqlite3")
        .arg(&db)
        .arg("DELETE FROM t")
        .status()
        .unwrap();
    assert!(emptied.success());
    daemon
        .ctl(&["backup", "create", "live", "--name", "emptied", "--wait"])
        .ok();
    let (status, second, _) = drill(&daemon, &["live", "emptied", "--wait"]);
    assert_eq!(status, 0, "{second}");
    assert_eq!(
        second["report"]["warnings"][0],
        "table t of database:main is empty in the backup but had 3 rows at the previous drill"
    );

    // A failing operator check fails the drill and names the check.
    let config = std::fs::read_to_string(daemon.path("envsnap.toml")).unwrap();
    std::fs::write(
        daemon.path("envsnap.toml"),
        config.replace("SELECT count(*) >= 0 FROM t", "SELECT count(*) > 0 FROM t"),
    )
    .unwrap();
    daemon.ctl(&["reload"]).ok();
    let out = daemon.ctl(&["drill", "live", "emptied", "--wait"]);
    assert_ne!(out.status, 0);
    assert!(
        out.stderr
            .contains("check `main: SELECT count(*) > 0 FROM t` returned \"0\", not true"),
        "{}",
        out.stderr
    );
    let failed = daemon.json(&["drill", "list", "live"]);
    assert_eq!(failed[0]["outcome"], "failed", "{failed}");
    let hooked = std::fs::read_to_string(daemon.path("failed.out")).unwrap();
    assert_eq!(
        hooked, "drill emptied\n",
        "the failure hook runs once, for the drill"
    );

    // A corrupted pack fails the drill and names the part.
    for pack in files_under(&daemon.path("store/test-host/packs")) {
        let mut bytes = std::fs::read(&pack).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&pack, bytes).unwrap();
    }
    let out = daemon.ctl(&["drill", "live", "full", "--wait"]);
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("part "), "{}", out.stderr);
    let id = daemon.json(&["drill", "list", "live"])[0]["id"]
        .as_i64()
        .unwrap();
    let report = daemon.json(&["drill", "show", &id.to_string()]);
    let failed_parts: Vec<_> = report["report"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["outcome"] == "failed")
        .collect();
    assert!(!failed_parts.is_empty(), "{report}");
    assert!(drills_dir(&daemon).is_empty());
    daemon.signal_and_wait(Signal::SIGTERM);
}

#[test]
fn kill_9_mid_drill_then_restart_leaves_no_scratch_server_and_no_sandbox() {
    let Some(pg) = servers::Postgres::start() else {
        return skip("PostgreSQL 15");
    };
    pg.superuser("CREATE DATABASE shop OWNER app");
    pg.pgbench_init("shop", 5);
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    let mut daemon = TestDaemon::start_in(dir, |d| {
        servers::password_file(&d.join("pg.pass"), &pg.password);
        standard_config(
            d,
            &format!(
                "\n[environments.live.databases.shop]\nkind = \"postgres\"\ndatabase = \"shop\"\nhost = \"{}\"\nuser = \"app\"\npassword_file = \"{}/pg.pass\"\n",
                pg.socket_dir().display(),
                d.display()
            ),
        )
    });
    daemon.ctl(&["backup", "create", "live", "--wait"]).ok();
    let job = daemon.json(&["drill", "live"]);
    let id = job["id"].as_i64().unwrap();
    let pid_file = daemon.path(&format!(
        "state/drills/{id}/database-shop/envsnap-server.pid"
    ));
    wait_until("the scratch server", 60, || pid_file.exists());
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // The scratch server has no network of the daemon's, and none of its variables.
    let namespace = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_ne!(namespace(pid), namespace(daemon.pid()));
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains("CARGO"),
        "the scratch server inherited the daemon's environment"
    );
    daemon.signal_and_wait(Signal::SIGKILL);
    // The kernel kills the scratch server with the daemon (its death signal).
    wait_until("the scratch server to die", 10, || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
    });
    daemon.spawn();
    assert!(drills_dir(&daemon).is_empty(), "{:?}", drills_dir(&daemon));
    assert!(
        processes_with("/proc/self/fd/3", &daemon.path("")).is_empty(),
        "{:?}",
        processes_with("/proc/self/fd/3", &daemon.path(""))
    );
    let job = daemon.json(&["job", "show", &id.to_string()]);
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["kind"], "drill");
    let log = daemon.json(&["log", "live"]);
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "drill"
                && e["outcome"] == "failed"
                && e["detail"] == "interrupted: the daemon stopped while the job ran"),
        "{log}"
    );
    // A drill cancelled while its scratch server loads: cancelled, nothing left.
    let job = daemon.json(&["drill", "live"]);
    let id = job["id"].as_i64().unwrap();
    let pid_file = daemon.path(&format!(
        "state/drills/{id}/database-shop/envsnap-server.pid"
    ));
    wait_until("the scratch server", 60, || pid_file.exists());
    daemon.ctl(&["job", "cancel", &id.to_string()]).ok();
    let job = daemon.wait_for_job(id, &["cancelled", "failed", "succeeded"]);
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(drills_dir(&daemon).is_empty(), "{:?}", drills_dir(&daemon));
    assert!(processes_with("/proc/self/fd/3", &daemon.path("")).is_empty());
    // A part that takes longer than drill.load_timeout fails, naming the limit, and
    // leaves nothing behind.
    let config = std::fs::read_to_string(daemon.path("envsnap.toml")).unwrap();
    let limited = format!("{config}\n[environments.live.drill]\nload_timeout = \"1s\"\n");
    std::fs::write(daemon.path("envsnap.toml"), limited).unwrap();
    daemon.ctl(&["reload"]).ok();
    let out = daemon.ctl(&["drill", "live", "--wait"]);
    assert!(
        out.stderr
            .contains("not restored and checked within drill.load_timeout (1s)"),
        "{}",
        out.stderr
    );
    assert!(drills_dir(&daemon).is_empty());
    assert!(processes_with("/proc/self/fd/3", &daemon.path("")).is_empty());
    // A drill user that does not exist fails the part, naming the setting.
    let no_user = config.replacen(
        "[daemon]\n",
        "[daemon]\ndrill_user = \"envsnap-no-such-user\"\n",
        1,
    );
    std::fs::write(daemon.path("envsnap.toml"), no_user).unwrap();
    daemon.ctl(&["reload"]).ok();
    let out = daemon.ctl(&["drill", "live", "--wait"]);
    assert!(
        out.stderr.contains(
            "cannot run as \"envsnap-no-such-user\": no such unprivileged user (daemon.drill_user)"
        ),
        "{}",
        out.stderr
    );
    assert!(drills_dir(&daemon).is_empty());
    std::fs::write(daemon.path("envsnap.toml"), config).unwrap();
    daemon.ctl(&["reload"]).ok();
    // The next drill runs normally.
    let (status, drilled, stderr) = drill(&daemon, &["live", "--wait"]);
    assert_eq!(status, 0, "{stderr}");
    let shop = drilled["report"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["part"] == "database:shop")
        .unwrap()
        .clone();
    assert_eq!(
        shop["database"]["tables"]["public.pgbench_accounts"], 500_000,
        "{shop}"
    );
}

#[test]
fn a_drill_schedule_fires() {
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    let daemon = TestDaemon::start_in(dir, |d| {
        standard_config(
            d,
            "\n[environments.live.drill]\nschedule = [\"*/2 * * * * *\"]\n",
        )
    });
    daemon
        .ctl(&["backup", "create", "live", "--name", "only", "--wait"])
        .ok();
    wait_until("a scheduled drill", 30, || {
        daemon
            .json(&["drill", "list", "live"])
            .as_array()
            .is_some_and(|d| !d.is_empty())
    });
    let drills = daemon.json(&["drill", "list", "live"]);
    assert_eq!(drills[0]["backup"], "only", "{drills}");
    assert_eq!(drills[0]["outcome"], "passed", "{drills}");
    let job = daemon.json(&["job", "show", &drills[0]["id"].to_string()]);
    assert_eq!(job["user"], "root");
}

#[test]
fn a_drill_of_nothing_or_of_an_unknown_backup_is_refused_in_one_line() {
    let daemon = TestDaemon::start("");
    let out = daemon.ctl(&["drill", "live"]);
    assert_ne!(out.status, 0);
    assert_eq!(
        out.stderr.trim(),
        "envsnapctl: environment live has no completed backup to drill"
    );
    let out = daemon.ctl(&["drill", "live", "nope"]);
    assert_eq!(
        out.stderr.trim(),
        "envsnapctl: environment live has no backup \"nope\""
    );
    let out = daemon.ctl(&["drill", "show", "99"]);
    assert_eq!(out.stderr.trim(), "envsnapctl: no drill 99");
}

/// A MariaDB dump is hostile input loaded by a server running as root: it cannot
/// change the server's settings or write files outside the scratch server's own.
#[test]
fn a_hostile_mariadb_dump_can_neither_reconfigure_the_scratch_server_nor_write_files() {
    let Some(maria) = servers::Mariadb::start() else {
        return skip("MariaDB");
    };
    maria.root("CREATE DATABASE shop");
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    let daemon = TestDaemon::start_in(dir, |d| {
        servers::password_file(&d.join("maria.pass"), &maria.password);
        standard_config(
            d,
            &format!(
                "\n[environments.live.databases.stock]\nkind = \"mariadb\"\ndatabase = \"shop\"\nsocket = \"{}\"\nuser = \"app\"\npassword_file = \"{}/maria.pass\"\n",
                maria.socket().display(),
                d.display()
            ),
        )
    });
    let pwned = daemon.path("pwned");
    for (name, sql) in [
        (
            "log",
            format!(
                "CREATE TABLE t (x INT);\nSET GLOBAL general_log_file = '{}';\nSET GLOBAL general_log = 1;\n-- Dump completed on 2026-12-03 13:00:00\n",
                pwned.display()
            ),
        ),
        (
            "outfile",
            format!(
                "CREATE TABLE t (x INT);\nSELECT 'owned' INTO OUTFILE '{}';\n-- Dump completed on 2026-12-03 13:00:00\n",
                pwned.display()
            ),
        ),
        (
            // An object defined as the scratch server's root, then run.
            "definer",
            format!(
                "CREATE TABLE t (x INT);\nDELIMITER ;;\nCREATE DEFINER=`root`@`localhost` PROCEDURE p() BEGIN SET GLOBAL general_log_file = '{}'; SET GLOBAL general_log = 1; END ;;\nDELIMITER ;\nCALL p();\n-- Dump completed on 2026-12-03 13:00:00\n",
                pwned.display()
            ),
        ),
    ] {
        let dump = daemon.path(&format!("{name}.sql"));
        std::fs::write(&dump, sql).unwrap();
        let part = format!("database:stock={}", dump.display());
        daemon
            .ctl(&["import", "live", "--name", name, "--part", &part, "--wait"])
            .ok();
        let out = daemon.ctl(&["drill", "live", name, "--wait"]);
        assert_ne!(out.status, 0, "the hostile dump loaded: {}", out.stdout);
        assert!(out.stderr.contains("part database:stock"), "{}", out.stderr);
        assert!(out.stderr.contains("denied"), "{}", out.stderr);
        assert!(!pwned.exists(), "the dump wrote {}", pwned.display());
    }
}
