//! End to end: `envsnapctl import` through the real daemon and socket.
//!
//! Archives made elsewhere (here: downloads of an earlier backup, recompressed with
//! gzip and zstd) become a backup with trigger `import` that restores the environment
//! exactly; hostile or broken archives are refused with one line naming the part and
//! the problem, and nothing is listed or changed.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::daemon::{Ctl, TestDaemon, ensure_user};
use crate::support::repo::assert_same_tree;

/// Backs up `live` as `b1` and downloads its parts into `DIR/archives`: code as
/// tar.zst, uploads as tar then gzip, the SQLite database as its file.
fn archives_of_live(daemon: &TestDaemon) -> [(String, PathBuf); 3] {
    let job = daemon.json(&["backup", "create", "live", "--name", "b1", "--wait"]);
    assert_eq!(job["job"]["state"], "succeeded", "{job}");
    let dir = daemon.path("archives");
    std::fs::create_dir_all(&dir).unwrap();
    let files = [
        ("code", dir.join("code.tar.zst")),
        ("files:uploads", dir.join("uploads.tar")),
        ("database:main", dir.join("main.db")),
    ];
    for (part, file) in &files {
        let file = file.to_str().unwrap();
        daemon
            .ctl(&[
                "backup", "download", "live", "b1", "--part", part, "-o", file,
            ])
            .ok();
    }
    let status = Command::new("gzip").arg(&files[1].1).status().unwrap();
    assert!(status.success());
    files.map(|(part, file)| {
        let file = if part == "files:uploads" {
            file.with_extension("tar.gz")
        } else {
            file
        };
        (part.to_owned(), file)
    })
}

fn part_args(files: &[(String, PathBuf)]) -> Vec<String> {
    files
        .iter()
        .flat_map(|(part, file)| ["--part".to_owned(), format!("{part}={}", file.display())])
        .collect()
}

fn ctl(daemon: &TestDaemon, args: &[String]) -> Ctl {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    daemon.ctl(&args)
}

/// A copy of `from` (with metadata) to compare with later.
fn snapshot(daemon: &TestDaemon, from: &str) -> PathBuf {
    let to = daemon.path(&format!("snapshot-{}", from.replace('/', "-")));
    let status = Command::new("cp")
        .args(["-a", "--"])
        .arg(daemon.path(from))
        .arg(&to)
        .status()
        .unwrap();
    assert!(status.success());
    to
}

fn rows(db: &Path) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg("SELECT group_concat(v) FROM t")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_import_restores_the_environment_exactly() {
    let daemon = TestDaemon::start("");
    let files = archives_of_live(&daemon);
    let (app, uploads) = (
        snapshot(&daemon, "live/app"),
        snapshot(&daemon, "live/uploads"),
    );

    // The environment changes after the archives were made.
    std::fs::write(daemon.path("live/app/index.php"), "changed\n").unwrap();
    std::fs::write(daemon.path("live/app/new.php"), "new\n").unwrap();
    std::fs::remove_file(daemon.path("live/uploads/photo.jpg")).unwrap();
    let db = daemon.path("live/data/main.db");
    let status = Command::new("sqlite3")
        .arg(&db)
        .arg("DELETE FROM t WHERE v = 'b'")
        .status()
        .unwrap();
    assert!(status.success());

    let mut args: Vec<String> = ["--json", "import", "live", "--name", "outside", "--wait"]
        .map(str::to_owned)
        .to_vec();
    args.extend(part_args(&files));
    let imported = ctl(&daemon, &args).ok().json();
    assert_eq!(imported["job"]["kind"], "import", "{imported}");
    assert_eq!(imported["backup"]["trigger"], "import", "{imported}");
    assert_eq!(imported["backup"]["version"], "2.4.1", "{imported}");
    let listed = daemon.json(&["backup", "show", "live", "outside"]);
    assert_eq!(listed["status"], "completed", "{listed}");

    let restored = daemon.ctl(&["restore", "live", "outside", "--yes", "--wait"]);
    assert_eq!(restored.status, 0, "{}{}", restored.stdout, restored.stderr);
    assert_same_tree(&app, &daemon.path("live/app"));
    assert_same_tree(&uploads, &daemon.path("live/uploads"));
    assert_eq!(rows(&db), "a,b,c\n");

    // Import and restore in one command.
    std::fs::write(daemon.path("live/app/index.php"), "changed again\n").unwrap();
    let mut args: Vec<String> = ["import", "live", "--restore", "--yes"]
        .map(str::to_owned)
        .to_vec();
    args.extend(part_args(&files[..1]));
    let both = ctl(&daemon, &args);
    assert_eq!(both.status, 0, "{}{}", both.stdout, both.stderr);
    assert_same_tree(&app, &daemon.path("live/app"));
    let log = daemon.json(&["log", "live"]);
    let imports = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "import" && e["outcome"] == "succeeded")
        .count();
    assert_eq!(imports, 2, "{log}");
}

/// A tar archive with one entry whose header says what it is, raw (the `tar` crate's
/// builder refuses hostile names).
fn hostile_tar(name: &str, kind: tar::EntryType, link: Option<&str>) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(link) = link {
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_entry_type(kind);
    header.set_size(if kind == tar::EntryType::Regular {
        4
    } else {
        0
    });
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    let mut archive = header.as_bytes().to_vec();
    if kind == tar::EntryType::Regular {
        archive.extend_from_slice(b"evil");
        archive.resize(1024, 0);
    }
    archive.extend_from_slice(&[0u8; 1024]);
    archive
}

#[test]
fn hostile_and_broken_archives_are_refused_and_change_nothing() {
    let daemon = TestDaemon::start("");
    let files = archives_of_live(&daemon);
    let dir = daemon.path("hostile");
    std::fs::create_dir_all(&dir).unwrap();
    let app = snapshot(&daemon, "live/app");

    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let zst = std::fs::read(&files[0].1).unwrap();
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        (
            "code",
            write(
                "up.tar",
                &hostile_tar("../evil", tar::EntryType::Regular, None),
            ),
            "importing code: entry ../evil leaves the part (absolute or ..)",
        ),
        (
            "code",
            write(
                "abs.tar",
                &hostile_tar("/etc/evil", tar::EntryType::Regular, None),
            ),
            "importing code: entry /etc/evil leaves the part (absolute or ..)",
        ),
        (
            "code",
            write(
                "link.tar",
                &hostile_tar("etc", tar::EntryType::Symlink, Some("/etc")),
            ),
            "importing code: symlink etc points outside the part (to /etc)",
        ),
        (
            "code",
            write("dev.tar", &hostile_tar("null", tar::EntryType::Char, None)),
            "importing code: entry null is a device node",
        ),
        (
            "code",
            write("cut.tar.zst", &zst[..zst.len() / 2]),
            "importing code: ",
        ),
        (
            "code",
            write("big.tar", &{
                // Cut inside a file's padding: truncated after that entry.
                let mut cut = hostile_tar("big", tar::EntryType::Regular, None);
                cut.truncate(600);
                cut
            }),
            "importing code: the archive is truncated after entry big",
        ),
        (
            "database:main",
            write("not.db", b"PGDMP this is no sqlite file"),
            "importing database:main: the file is not a SQLite database file",
        ),
    ];
    for (part, file, expected) in cases {
        let name = format!("bad-{}", file.file_name().unwrap().to_string_lossy());
        let name = name.replace('.', "-");
        let args: Vec<String> = ["import", "live", "--name", &name, "--wait", "--part"]
            .map(str::to_owned)
            .into_iter()
            .chain([format!("{part}={}", file.display())])
            .collect();
        let failed = ctl(&daemon, &args);
        assert_ne!(failed.status, 0, "{} was accepted", file.display());
        let message = failed.stderr.trim();
        assert!(
            message.starts_with(&format!(
                "envsnapctl: import {name} of live failed: {expected}"
            )),
            "{message}"
        );
        let shown = daemon.ctl(&["backup", "show", "live", &name]);
        assert_ne!(shown.status, 0, "a refused import is listed");
    }
    assert!(!daemon.path("state/evil").exists() && !daemon.path("state/tmp/evil").exists());
    let leftovers: Vec<_> = std::fs::read_dir(daemon.path("state/tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "staging left: {leftovers:?}");
    assert_same_tree(&app, &daemon.path("live/app"));

    // Refused before anything is queued: unknown parts, files the client cannot open.
    let failed = daemon.ctl(&["import", "live", "--part", "nope=/dev/null"]);
    assert_eq!(
        failed.stderr.trim(),
        "envsnapctl: environment live has no part nope (it has: code, files:uploads, database:main)"
    );
    let failed = daemon.ctl(&["import", "live", "--part", "code=file:///etc/shadow"]);
    assert_eq!(
        failed.stderr.trim(),
        "envsnapctl: import URLs are http(s) or a store's (s3://, gs://, az://), not file:// (pass a local file as PART=FILE)"
    );
    let missing = dir.join("missing.tar");
    let failed = ctl(
        &daemon,
        &[
            "import".into(),
            "live".into(),
            "--part".into(),
            format!("code={}", missing.display()),
        ],
    );
    assert!(
        failed
            .stderr
            .trim()
            .starts_with(&format!("envsnapctl: cannot open {}: ", missing.display())),
        "{}",
        failed.stderr
    );
}

#[test]
fn import_needs_the_restore_right() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run envsnapctl as another user");
        return;
    }
    let (user, restorer) = ("envsnap-e2e-dl", "envsnap-e2e");
    let (uid, restorer_uid) = (ensure_user(user), ensure_user(restorer));
    let daemon = TestDaemon::start(&format!(
        "[access]\ndownload = [\"user:{user}\"]\nrestore = [\"user:{restorer}\"]\n"
    ));
    daemon.open_socket_to_everyone();
    let denied = daemon.ctl_as(Some(uid), &["import", "live", "--part", "code=/dev/null"]);
    assert_eq!(
        denied.stderr.trim(),
        format!("envsnapctl: user {user} may not restore on environment live")
    );
    // Allowed to import, but not to make the daemon fetch URLs with its own access.
    let fetch = daemon.ctl_as(
        Some(restorer_uid),
        &["import", "live", "--part", "code=http://127.0.0.1:9/x.tar"],
    );
    assert_eq!(
        fetch.stderr.trim(),
        format!(
            "envsnapctl: user {restorer} may not import from URLs (only root may); pass the files instead"
        )
    );
    // Nor to pass something that is not a regular file.
    let fifo = daemon.ctl_as(
        Some(restorer_uid),
        &["import", "live", "--part", "code=/dev/null"],
    );
    assert_eq!(
        fifo.stderr.trim(),
        "envsnapctl: the file for part code is not a regular file"
    );
}

/// A request its files cannot save is refused before any file is asked for.
#[test]
fn a_bad_import_is_refused_before_its_files_are_asked_for() {
    use std::io::{BufRead, BufReader, Write};
    let daemon = TestDaemon::start("");
    let socket = std::os::unix::net::UnixStream::connect(daemon.path("run/envsnapd.sock")).unwrap();
    let request = r#"{"v":1,"command":"import","args":{"env":"live","parts":["code","nope"]}}"#;
    (&socket)
        .write_all(format!("{request}\n").as_bytes())
        .unwrap();
    let mut first = String::new();
    BufReader::new(&socket).read_line(&mut first).unwrap();
    assert!(
        first.starts_with(r#"{"type":"error","code":"invalid""#)
            && first.contains("environment live has no part nope"),
        "{first}"
    );
}

/// An import queued when the daemon is killed cannot run after the restart (its files
/// were the client's): it fails saying so, and lists nothing.
#[test]
fn a_restart_fails_a_queued_import_that_lost_its_files() {
    let mut daemon = TestDaemon::start("");
    let files = archives_of_live(&daemon);
    // A slow backup runs first; the import waits behind it (one job per environment).
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 300000000 /dev/urandom > {}",
            daemon.path("live/uploads/large.bin").display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let slow = daemon.json(&["backup", "create", "live", "--name", "slow"]);
    daemon.wait_for_job(slow["id"].as_i64().unwrap(), &["running"]);
    let mut args: Vec<String> = ["--json", "import", "live", "--name", "orphan"]
        .map(str::to_owned)
        .to_vec();
    args.extend(part_args(&files[..1]));
    let queued = ctl(&daemon, &args).ok().json();
    assert_eq!(queued["state"], "queued", "{queued}");

    daemon.signal_and_wait(nix::sys::signal::Signal::SIGKILL);
    daemon.spawn();
    let job = daemon.wait_for_job(queued["id"].as_i64().unwrap(), &["failed", "succeeded"]);
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(
        job["error"],
        "the import's files were lost when the daemon restarted; run the import again"
    );
    let shown = daemon.ctl(&["backup", "show", "live", "orphan"]);
    assert_ne!(shown.status, 0, "a failed import is listed");
}

/// Root's import drops setuid and setgid bits unless asked to keep them: an
/// archive made elsewhere does not make setuid-root files by default.
#[test]
fn setuid_bits_of_an_import_are_dropped_unless_kept() {
    use std::os::unix::fs::PermissionsExt;
    let daemon = TestDaemon::start("");
    let tool = daemon.path("live/app/tool");
    std::fs::write(&tool, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let shared = daemon.path("live/app/src");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o2775)).unwrap();
    let [code, ..] = archives_of_live(&daemon);
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    for (name, keep, expected) in [
        ("plain", false, (0o755, 0o775)),
        ("kept", true, (0o4755, 0o2775)),
    ] {
        let mut args: Vec<String> = ["import", "live", "--name", name, "--wait"]
            .map(str::to_owned)
            .to_vec();
        if keep {
            args.push("--keep-setuid".into());
        }
        args.extend(part_args(std::slice::from_ref(&code)));
        ctl(&daemon, &args).ok();
        daemon
            .ctl(&["restore", "live", name, "--yes", "--wait"])
            .ok();
        assert_eq!((mode(&tool), mode(&shared)), expected, "import {name}");
    }
}

/// A zstd archive of one file of `mib` MiB of zeros, `zeros.bin`, written non-sparse
/// (GNU tar without `--sparse`), as a bomb would be.
fn zero_bomb(daemon: &TestDaemon, name: &str, mib: u64) -> PathBuf {
    let dir = daemon.path(&format!("bomb-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let zeros = std::fs::File::create(dir.join("zeros.bin")).unwrap();
    zeros.set_len(mib << 20).unwrap();
    let archive = daemon.path(&format!("{name}.tar.zst"));
    let status = Command::new("tar")
        .arg("--zstd")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&dir)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    archive
}

/// Zeros are unpacked as holes, backed up and restored sparse; an archive that
/// unpacks to more than `import.max_size` is refused before it is written out.
#[test]
fn zeros_are_imported_as_holes_and_import_max_size_refuses_a_bomb() {
    let daemon = TestDaemon::start("[import]\nmax_size = \"48MiB\"\n");
    let bomb = zero_bomb(&daemon, "bomb", 64);
    let refused = daemon.ctl(&[
        "import",
        "live",
        "--name",
        "bomb",
        "--wait",
        "--part",
        &format!("files:uploads={}", bomb.display()),
    ]);
    assert_ne!(refused.status, 0);
    assert!(
        refused.stderr.contains(
            "importing files:uploads: cannot unpack entry zeros.bin: \
             the archive unpacks to more than 48.0 MiB (import.max_size)"
        ),
        "{}",
        refused.stderr
    );
    assert!(
        daemon
            .json(&["backup", "list", "live"])
            .as_array()
            .unwrap()
            .is_empty()
    );

    let zeros = zero_bomb(&daemon, "zeros", 40);
    daemon.json(&[
        "import",
        "live",
        "--name",
        "zeros",
        "--wait",
        "--part",
        &format!("files:uploads={}", zeros.display()),
    ]);
    daemon.json(&["restore", "live", "zeros", "--yes", "--wait"]);
    use std::os::unix::fs::MetadataExt;
    let restored = std::fs::metadata(daemon.path("live/uploads/zeros.bin")).unwrap();
    assert_eq!(restored.len(), 40 << 20);
    assert!(
        restored.blocks() * 512 < 1 << 20,
        "restored with {} bytes allocated",
        restored.blocks() * 512
    );
}
