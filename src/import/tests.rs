use super::*;
use crate::config::DatabaseKind;
use tokio::io::AsyncReadExt;

/// A tar entry with a raw name (the `tar` crate's builder refuses hostile ones).
fn raw_entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    let field = &mut header.as_old_mut().name;
    field[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    if let Some(link) = link {
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn finished(mut archive: Vec<u8>) -> Vec<u8> {
    archive.extend_from_slice(&[0u8; 1024]);
    archive
}

fn options(owner: Option<(u32, u32)>, keep_setuid: bool) -> UnpackOptions {
    UnpackOptions {
        owner,
        keep_setuid,
        max_size: 1 << 30,
    }
}

fn unpack_bytes(archive: Vec<u8>) -> (tempfile::TempDir, Result<u64, String>) {
    let dir = tempfile::tempdir().unwrap();
    let result = unpack(&archive[..], dir.path(), options(None, true));
    (dir, result)
}

#[test]
fn a_good_archive_unpacks_whole() {
    let mut archive = Vec::new();
    raw_entry(&mut archive, "./", tar::EntryType::Directory, None, b"");
    raw_entry(&mut archive, "./dir/", tar::EntryType::Directory, None, b"");
    raw_entry(
        &mut archive,
        "./dir/a.txt",
        tar::EntryType::Regular,
        None,
        b"hello",
    );
    raw_entry(
        &mut archive,
        "dir/same",
        tar::EntryType::Link,
        Some("dir/a.txt"),
        b"",
    );
    raw_entry(
        &mut archive,
        "dir/up",
        tar::EntryType::Symlink,
        Some("../dir/a.txt"),
        b"",
    );
    let (dir, result) = unpack_bytes(finished(archive));
    assert_eq!(result, Ok(4));
    assert_eq!(
        std::fs::read(dir.path().join("dir/same")).unwrap(),
        b"hello"
    );
    assert_eq!(std::fs::read(dir.path().join("dir/up")).unwrap(), b"hello");
    let mtime = std::fs::metadata(dir.path().join("dir")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::mtime(&mtime), 1_700_000_000);
}

#[test]
fn hostile_entries_are_refused_with_what_is_wrong() {
    use tar::EntryType::*;
    let cases: [(&str, tar::EntryType, Option<&str>, &str); 7] = [
        (
            "../evil",
            Regular,
            None,
            "entry ../evil leaves the part (absolute or ..)",
        ),
        (
            "/etc/passwd",
            Regular,
            None,
            "entry /etc/passwd leaves the part (absolute or ..)",
        ),
        (
            "a/../../b",
            Regular,
            None,
            "entry a/../../b leaves the part (absolute or ..)",
        ),
        (
            "etc",
            Symlink,
            Some("/etc"),
            "symlink etc points outside the part (to /etc)",
        ),
        (
            "d/x",
            Symlink,
            Some("../../x"),
            "symlink d/x points outside the part (to ../../x)",
        ),
        (
            "hard",
            Link,
            Some("missing"),
            "hard link hard does not point to a file earlier in the archive (to missing)",
        ),
        ("dev", Char, None, "entry dev is a device node"),
    ];
    for (name, kind, link, expected) in cases {
        let mut archive = Vec::new();
        raw_entry(&mut archive, name, kind, link, b"x");
        let (dir, result) = unpack_bytes(finished(archive));
        assert_eq!(result, Err(expected.to_owned()), "{name}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{name} wrote"
        );
    }
}

#[test]
fn a_truncated_archive_is_refused() {
    let mut archive = Vec::new();
    raw_entry(
        &mut archive,
        "big",
        tar::EntryType::Regular,
        None,
        &[7u8; 5000],
    );
    archive.truncate(2000);
    let (_dir, result) = unpack_bytes(archive);
    let message = result.unwrap_err();
    assert_eq!(message, "the archive is truncated at entry big");

    let mut garbage = vec![b'x'; 1024];
    garbage.extend_from_slice(&[0u8; 1024]);
    let (_dir, result) = unpack_bytes(garbage);
    let message = result.unwrap_err();
    assert!(
        message.starts_with("the archive is corrupt or truncated"),
        "{message}"
    );
}

#[test]
fn paths_and_links_are_judged_lexically() {
    assert_eq!(
        inside_path(Path::new("./a/./b")),
        Some(PathBuf::from("a/b"))
    );
    assert_eq!(inside_path(Path::new("a/../b")), None);
    let none = HashSet::new();
    assert!(symlink_stays_inside(
        Path::new("a/b/link"),
        Path::new("../../c"),
        &none
    ));
    assert!(!symlink_stays_inside(
        Path::new("a/b/link"),
        Path::new("../../../c"),
        &none
    ));
    assert!(!symlink_stays_inside(
        Path::new("link"),
        Path::new("x/../../y"),
        &none
    ));
    // Through another symlink of the archive: refused, wherever it seems to lead.
    let up = HashSet::from([PathBuf::from("a/b/up")]);
    assert!(!symlink_stays_inside(
        Path::new("q"),
        Path::new("a/b/up/../../x"),
        &up
    ));
}

async fn read_all(input: Input) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut input = input;
    input.read_to_end(&mut out).await?;
    Ok(out)
}

fn file_with(bytes: &[u8]) -> std::fs::File {
    use std::io::{Seek, Write};
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(bytes).unwrap();
    file.rewind().unwrap();
    file
}

#[tokio::test]
async fn compression_is_told_by_magic_and_must_be_complete() {
    let plain = b"-- MariaDB dump\nCREATE TABLE t (x int);\n-- Dump completed on 2026\n".repeat(50);
    let zst = zstd::encode_all(&plain[..], 3).unwrap();
    let mut gz = Vec::new();
    async_compression::tokio::bufread::GzipEncoder::new(&plain[..])
        .read_to_end(&mut gz)
        .await
        .unwrap();
    for bytes in [&plain, &zst, &gz] {
        let input = from_file(file_with(bytes)).await.unwrap();
        assert_eq!(read_all(input).await.unwrap(), plain);
    }
    for cut in [&zst[..zst.len() - 10], &gz[..gz.len() - 10]] {
        let input = from_file(file_with(cut)).await.unwrap();
        assert!(
            read_all(input).await.is_err(),
            "a truncated stream was accepted"
        );
    }
}

async fn check(bytes: &[u8], kind: DatabaseKind) -> Result<Vec<u8>, String> {
    let input: Input = Box::pin(std::io::Cursor::new(bytes.to_vec()));
    let checked = checked_dump(input, kind, 1 << 30).await?;
    read_all(checked).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn dumps_must_be_their_kind_and_whole() {
    // SQLite: a real database file, and the same cut short by a page.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('a'), ('b');")
        .unwrap();
    drop(db);
    let sqlite = std::fs::read(&path).unwrap();
    assert_eq!(check(&sqlite, DatabaseKind::Sqlite).await.unwrap(), sqlite);
    let cut = &sqlite[..sqlite.len() - 4096];
    assert_eq!(
        check(cut, DatabaseKind::Sqlite).await.unwrap_err(),
        "the dump is truncated: it does not end as a whole dump does"
    );

    let rdb = b"REDIS0011\xfa\x09redis-ver\x057.0.0\xff12345678";
    assert!(check(rdb, DatabaseKind::Redis).await.is_ok());
    assert!(
        check(&rdb[..rdb.len() - 3], DatabaseKind::Redis)
            .await
            .is_err()
    );

    let sql = b"-- MariaDB dump 10.19\nCREATE TABLE t (x int);\n-- Dump completed on 2026-11-24\n";
    assert!(check(sql, DatabaseKind::Mariadb).await.is_ok());
    assert!(check(&sql[..40], DatabaseKind::Mariadb).await.is_err());

    assert_eq!(
        check(b"PGDMP\x01\x0e", DatabaseKind::Postgres)
            .await
            .unwrap(),
        b"PGDMP\x01\x0e"
    );
    for (bytes, kind, expected) in [
        (
            &sqlite[..],
            DatabaseKind::Postgres,
            "the file is not a PostgreSQL custom-format dump (pg_dump -Fc)",
        ),
        (
            &b"\x00\x01binary"[..],
            DatabaseKind::Mariadb,
            "the file is not a MariaDB/MySQL SQL dump (mariadb-dump)",
        ),
        (
            &b"PGDMP"[..],
            DatabaseKind::Sqlite,
            "the file is not a SQLite database file",
        ),
        (
            &b""[..],
            DatabaseKind::Redis,
            "the file is not a Redis RDB file",
        ),
    ] {
        assert_eq!(check(bytes, kind).await.unwrap_err(), expected);
    }
}

#[test]
fn symlinks_cannot_be_chained_or_entered() {
    let mut archive = Vec::new();
    raw_entry(&mut archive, "up", tar::EntryType::Symlink, Some("."), b"");
    raw_entry(
        &mut archive,
        "q",
        tar::EntryType::Symlink,
        Some("up/../../etc"),
        b"",
    );
    let (_dir, result) = unpack_bytes(finished(archive));
    assert_eq!(
        result,
        Err("symlink q points outside the part (to up/../../etc)".to_owned())
    );

    let mut archive = Vec::new();
    raw_entry(&mut archive, "up", tar::EntryType::Symlink, Some("."), b"");
    raw_entry(&mut archive, "up/file", tar::EntryType::Regular, None, b"x");
    let (_dir, result) = unpack_bytes(finished(archive));
    assert_eq!(
        result,
        Err("entry up/file lies below symlink up".to_owned())
    );
}

/// A user's import: entries become theirs, setuid and setgid bits are dropped.
#[test]
fn a_users_import_cannot_plant_setuid_root_files() {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to give files to another user");
        return;
    }
    let mut archive = Vec::new();
    raw_entry(&mut archive, "sh", tar::EntryType::Regular, None, b"#!");
    // Mode 06755, owned by root (raw_entry sets uid 0).
    let header = tar::Header::from_byte_slice(&archive[..512]).clone();
    let mut header = header;
    header.set_mode(0o6755);
    header.set_cksum();
    archive[..512].copy_from_slice(header.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let result = unpack(
        &finished(archive)[..],
        dir.path(),
        options(Some((4321, 4322)), false),
    );
    assert_eq!(result, Ok(1));
    let meta = std::fs::symlink_metadata(dir.path().join("sh")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4321, 4322));
    assert_eq!(meta.mode() & 0o7777, 0o755);
}

#[test]
fn a_fifo_is_unpacked_as_a_fifo_and_setuid_bits_are_dropped_unless_kept() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let mut archive = Vec::new();
    raw_entry(&mut archive, "./", tar::EntryType::Directory, None, b"");
    raw_entry(&mut archive, "run/pipe", tar::EntryType::Fifo, None, b"");
    raw_entry(&mut archive, "tool", tar::EntryType::Regular, None, b"#!");
    // The tool's header asks for setuid.
    let at = archive.len() - 1024;
    let mut header = tar::Header::from_byte_slice(&archive[at..at + 512]).clone();
    header.set_mode(0o4755);
    header.set_cksum();
    archive[at..at + 512].copy_from_slice(header.as_bytes());
    let archive = finished(archive);
    for (keep, mode) in [(false, 0o755), (true, 0o4755)] {
        let dir = tempfile::tempdir().unwrap();
        unpack(&archive[..], dir.path(), options(None, keep)).unwrap();
        let pipe = std::fs::symlink_metadata(dir.path().join("run/pipe")).unwrap();
        assert!(pipe.file_type().is_fifo(), "a fifo stays a fifo");
        assert_eq!(pipe.permissions().mode() & 0o7777, 0o644);
        let tool = std::fs::metadata(dir.path().join("tool")).unwrap();
        assert_eq!(
            tool.permissions().mode() & 0o7777,
            mode,
            "keep_setuid {keep}"
        );
    }
}
