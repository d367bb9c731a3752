//! The seed corpus, made with the real encoders: a real backup's manifest, tree,
//! packs, index object and repository config; requests and replies as envsnapctl
//! and envsnapd write them; tar archives as GNU tar and our downloads lay them out;
//! dump headers and scripts in the shape their tools print.
//!
//! The files are kept in `fuzz/corpus/<target>/seed-*`; this test writes them again
//! (`cargo test --test integration fuzz::seeds -- --ignored`). Inputs that once broke
//! a target are kept beside them as `regression-*` and are never rewritten.

use envsnap::control::protocol::{
    Envelope, ErrorCode, ErrorReply, PROTOCOL_VERSION, Progress, Reply, Request,
};
use envsnap::drill::report::Report;
use envsnap::repo::crypto::Keys;
use envsnap::repo::pack;
use tokio_util::sync::CancellationToken;

use super::driver::corpus_dir;
use super::repo::SEALED_SECRET;
use crate::support::repo::{StoreKind, TestRepo, backup_dir, meta};

#[test]
#[ignore = "writes the seed corpus under fuzz/corpus"]
fn write_seed_corpus() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(repository_seeds());
    protocol_seeds();
    runtime.block_on(tar_seeds());
    database_seeds();
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus_dir(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

/// A small backup of a tree (file, empty file, symlink, hard link, fifo) and a stream,
/// read back object by object from the store.
async fn repository_seeds() {
    let test = TestRepo::new(StoreKind::Memory, false).await;
    let source = test.scratch("source");
    std::fs::create_dir(source.join("dir")).unwrap();
    std::fs::write(source.join("dir/a.txt"), b"hello, envsnap\n".repeat(40)).unwrap();
    std::fs::write(source.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("dir/a.txt", source.join("link")).unwrap();
    std::fs::hard_link(source.join("dir/a.txt"), source.join("same")).unwrap();
    nix::unistd::mkfifo(
        &source.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    let tree_backup = backup_dir(&test.repo, "live", "tree", &source, None).await;
    let mut writer = test
        .repo
        .start_backup(CancellationToken::new())
        .await
        .unwrap();
    let stream: Vec<u8> = (0..3000u32).flat_map(|i| i.to_le_bytes()).collect();
    writer
        .add_stream("database:main", "sqlite", std::io::Cursor::new(stream))
        .await
        .unwrap();
    writer.commit(meta("live", "stream")).await.unwrap();

    let store = test.root.scoped(crate::support::repo::HOST);
    write("repo_config", "config", &store.get("config").await.unwrap());
    for (n, object) in store.list("manifests").await.unwrap().iter().enumerate() {
        write(
            "manifest",
            &n.to_string(),
            &store.get(&object.key).await.unwrap(),
        );
    }
    for (n, object) in store.list("index").await.unwrap().iter().enumerate() {
        write(
            "index",
            &n.to_string(),
            &store.get(&object.key).await.unwrap(),
        );
    }
    for (n, object) in store.list("packs").await.unwrap().iter().enumerate() {
        let bytes = store.get(&object.key).await.unwrap();
        write("pack", &n.to_string(), &bytes);
        for (b, entry) in pack::parse_pack(&Keys::none(), &bytes)
            .unwrap()
            .iter()
            .enumerate()
            .take(3)
        {
            let mut blob = entry.raw_length.to_le_bytes().to_vec();
            blob.extend_from_slice(&entry.id.0);
            blob.extend_from_slice(&bytes[entry.offset as usize..][..entry.length as usize]);
            write("blob", &format!("{n}-{b}"), &blob);
        }
    }
    let mut tree = Vec::new();
    for id in &tree_backup.part("files:data").unwrap().chunks {
        tree.extend(test.repo.load_chunk(*id).await.unwrap());
    }
    write("tree", "backup", &tree);
    let keys = Keys::from_secret(SEALED_SECRET);
    write("sealed", "manifest", &tree_backup.encode(&keys));
    write("sealed", "empty", &keys.seal(Vec::new()));
    let report: Report = serde_json::from_str(DRILL_REPORT).unwrap();
    write(
        "drill_report",
        "doc",
        &serde_json::to_vec_pretty(&report).unwrap(),
    );
}

/// The example in docs/drills.md.
const DRILL_REPORT: &str = r#"{
  "id": 42, "host": "web-01", "env": "live", "backup": "20261206-050000-scheduled",
  "manifest": "20261206T050002Z-1a2b3c4d", "user": "root",
  "started": "2026-12-06T05:00:02Z", "finished": "2026-12-06T05:01:10Z",
  "duration_seconds": 68.1, "outcome": "failed", "error": "part code: differs",
  "parts": [
    {"part": "code", "kind": "tree", "outcome": "passed", "seconds": 1.2, "size": 36812451,
     "tree": {"entries": 1204, "files": 980, "bytes": 36812451}},
    {"part": "database:main", "kind": "postgres", "outcome": "passed", "seconds": 41.0,
     "size": 512000000, "database": {"tables": {"public.orders": 120, "public.users": 35}}},
    {"part": "database:cache", "kind": "redis", "outcome": "passed", "seconds": 0.6,
     "size": 10240, "database": {"keys": 40}, "keys_at_backup": 40}
  ],
  "checks": [{"name": "main: SELECT count(*) > 0 FROM users", "outcome": "passed", "seconds": 0.1}],
  "commands": [{"name": "/usr/local/lib/shop/drill-smoke-test", "outcome": "failed", "seconds": 2.3, "error": "exit 1"}],
  "warnings": ["table public.users shrank"], "sandbox": null
}"#;

fn protocol_seeds() {
    let time = "2026-12-01T10:00:00Z".parse().unwrap();
    let requests = [
        Request::Status,
        Request::EnvShow { env: "live".into() },
        Request::BackupCreate {
            env: "live".into(),
            name: Some("before".into()),
            wait: true,
            keep_until: Some(time),
        },
        Request::BackupKeep {
            env: "live".into(),
            backup: "b".into(),
            until: None,
        },
        Request::BackupDownload {
            env: "live".into(),
            backup: "b".into(),
            part: "code".into(),
            format: Some("tar.zst".into()),
        },
        Request::BackupLink {
            env: "live".into(),
            backup: "b".into(),
            part: "code".into(),
            format: None,
            ttl_seconds: Some(300),
        },
        Request::Import {
            env: "live".into(),
            parts: vec!["code".into(), "database:main".into()],
            urls: [("files:up".to_string(), "s3://bucket/key".to_string())].into(),
            name: None,
            version: Some("1.2".into()),
            wait: false,
            keep_setuid: true,
        },
        Request::Restore {
            env: "test".into(),
            backup: "b".into(),
            from: Some("web-01/live".into()),
            map: [("code".to_string(), "-".to_string())].into(),
            wait: true,
            no_safety_backup: false,
            dry_run: true,
        },
        Request::Drill {
            env: "live".into(),
            backup: None,
            wait: true,
            keep: false,
        },
        Request::JobWatch { id: 7 },
        Request::Log {
            env: None,
            since: Some(time),
            limit: Some(10),
        },
        Request::Verify {
            env: "live".into(),
            backup: None,
            read_data: true,
        },
        Request::Prune { dry_run: true },
    ];
    for request in requests {
        let name = request.name();
        let mut line = serde_json::to_vec(&Envelope {
            v: PROTOCOL_VERSION,
            request,
        })
        .unwrap();
        write("protocol_request", &name, &line);
        line.push(b'\n');
        write("protocol_socket", &name, &line);
    }
    let line = |reply: &Reply| [serde_json::to_vec(reply).unwrap(), b"\n".to_vec()].concat();
    let progress = line(&Reply::Progress(Progress {
        job: 3,
        bytes_done: 10,
        part: "code".into(),
        ..Default::default()
    }));
    let result = line(&Reply::Result {
        data: serde_json::json!({"backup": {"name": "b"}}),
    });
    let error = line(&Reply::Error(ErrorReply::new(
        ErrorCode::NotFound,
        "no environment x",
    )));
    write(
        "protocol_client",
        "result",
        &[progress.clone(), result].concat(),
    );
    write("protocol_client", "error", &[progress, error].concat());
    write("protocol_client", "send-file", &line(&Reply::SendFile));
}

/// An archive as a download writes it (PAX, nanosecond mtimes), with every kind of
/// entry an import accepts; and the same compressed with gzip and zstd.
async fn tar_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path();
    std::fs::create_dir(source.join("dir")).unwrap();
    std::fs::write(source.join("dir/a.txt"), b"hello\n").unwrap();
    std::os::unix::fs::symlink("dir/a.txt", source.join("link")).unwrap();
    std::fs::hard_link(source.join("dir/a.txt"), source.join("dir/same")).unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Complete);
    builder.append_dir_all(".", source).unwrap();
    let mut pax = tar::Builder::new(Vec::new());
    pax.append_pax_extensions([("mtime", &b"1700000000.123456789"[..])])
        .unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_path("fifo").unwrap();
    header.set_entry_type(tar::EntryType::Fifo);
    header.set_mode(0o640);
    header.set_size(0);
    header.set_cksum();
    pax.append(&header, &[][..]).unwrap();
    let plain = builder.into_inner().unwrap();
    write("tar_import", "tree", &plain);
    write("tar_import", "pax-fifo", &pax.into_inner().unwrap());
    write(
        "tar_import",
        "tree-zstd",
        &zstd::encode_all(&plain[..], 3).unwrap(),
    );
    let mut gzip = Vec::new();
    let mut encoder = async_compression::tokio::bufread::GzipEncoder::new(&plain[..]);
    tokio::io::AsyncReadExt::read_to_end(&mut encoder, &mut gzip)
        .await
        .unwrap();
    write("tar_import", "tree-gzip", &gzip);
}

/// Dump headers as pg_dump writes them (`WriteHead`, archive versions 1.14 and 1.15),
/// a SQLite file, an RDB file's frame, and scripts as pg_dumpall and mariadb-dump
/// print them.
fn database_seeds() {
    for (name, version) in [("1.14", [1u8, 14, 0]), ("1.15", [1, 15, 0])] {
        let header = pg_dump_header(version);
        write("pg_dump_header", name, &header);
        write(
            "dump_check",
            &format!("postgres-{name}"),
            &[&[0u8][..], &header].concat(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch("CREATE TABLE t (a); INSERT INTO t VALUES (1), ('x');")
        .unwrap();
    drop(db);
    write(
        "dump_check",
        "sqlite",
        &[&[2u8][..], &std::fs::read(&path).unwrap()].concat(),
    );
    let rdb = [
        &b"REDIS0011\xfa\x09redis-ver\x057.0.15\x00\x01k\x01v"[..],
        &[0xff],
        &[7u8; 8],
    ]
    .concat();
    write("dump_check", "redis", &[&[3u8][..], &rdb].concat());
    write(
        "dump_check",
        "mariadb",
        &[&[1u8][..], MARIADB_DUMP.as_bytes()].concat(),
    );
    write("mariadb_definers", "dump", MARIADB_DUMP.as_bytes());
    write("pg_roles", "pg_dumpall", ROLES_SCRIPT.as_bytes());
}

fn pg_dump_header(version: [u8; 3]) -> Vec<u8> {
    let int = |value: i64| {
        let mut out = vec![u8::from(value < 0)];
        out.extend_from_slice(&(value.unsigned_abs() as u32).to_le_bytes());
        out
    };
    let string = |text: &str| [int(text.len() as i64), text.as_bytes().to_vec()].concat();
    let mut header = b"PGDMP".to_vec();
    header.extend_from_slice(&version);
    header.extend_from_slice(&[4, 8, 1]);
    match version >= [1, 15, 0] {
        true => header.push(0),
        false => header.extend(int(-1)),
    }
    for field in [5, 4, 3, 2, 1, 126, 0] {
        header.extend(int(field));
    }
    header.extend(string("shop"));
    header.extend(string("15.18 (Debian 15.18-0+deb12u1)"));
    header.extend(string("15.18"));
    header
}

const MARIADB_DUMP: &str = "-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB
/*!40101 SET NAMES utf8mb4 */;
CREATE TABLE `t` (`a` int) ENGINE=InnoDB;
INSERT INTO `t` VALUES (1),(2);
/*!50003 CREATE*/ /*!50017 DEFINER=`app`@`localhost`*/ /*!50003 TRIGGER tr AFTER INSERT ON t FOR EACH ROW SET @a = 1 */;;
/*!50001 CREATE ALGORITHM=UNDEFINED */
/*!50013 DEFINER=`ro``ot`@`%` SQL SECURITY DEFINER */
/*!50001 VIEW `v` AS select 1 AS `1` */;
CREATE DEFINER='app'@'localhost' PROCEDURE p() SELECT 'DEFINER=`x`@`y`';
-- Dump completed on 2026-12-01 10:00:00
";

/// The shape `pg_dumpall --roles-only --no-role-passwords` prints (PostgreSQL 15).
const ROLES_SCRIPT: &str = r#"--
-- PostgreSQL database cluster dump
--

SET default_transaction_read_only = off;

--
-- Roles
--

CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE "Odd ""one""; x";
ALTER ROLE "Odd ""one""; x" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 5 VALID UNTIL 'infinity';
COMMENT ON ROLE "Odd ""one""; x" IS 'a role; with a semicolon -- and no comment';
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
ALTER ROLE app SET search_path TO 'shop', 'public';

--
-- Role memberships
--

GRANT "Odd ""one""; x" TO app GRANTED BY postgres;
GRANT app TO postgres GRANTED BY postgres;

--
-- PostgreSQL database cluster dump complete
--
"#;
