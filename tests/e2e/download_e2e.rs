//! End to end: `envsnapctl backup download` through the real daemon and socket.
//!
//! Downloads are files that need no envsnap: tar and tar.zst that GNU tar unpacks
//! into the very tree that was backed up, and database parts as their native dumps.
//! The client opens the file and passes it over the socket; failures leave nothing
//! behind; the `download` right is enforced; a peer that does not pass a proper file
//! gets a one-line error.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::daemon::{TestDaemon, ensure_user, make_environments, standard_config};
use crate::support::repo::assert_same_tree;

fn backed_up() -> TestDaemon {
    let daemon = TestDaemon::start("");
    let job = daemon.json(&["backup", "create", "live", "--name", "b1", "--wait"]);
    assert_eq!(job["job"]["state"], "succeeded", "{job}");
    daemon
}

/// Unpacks `archive` with GNU tar (`extra` flags, e.g. `--zstd`) into a new directory
/// with the mode of `like`, and returns it.
fn untar(daemon: &TestDaemon, archive: &Path, extra: &[&str], like: &Path) -> std::path::PathBuf {
    let out = daemon.path(&format!(
        "unpacked-{}",
        archive.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&out).unwrap();
    let status = Command::new("tar")
        .args(extra)
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "tar could not unpack {}",
        archive.display()
    );
    let mode = std::fs::metadata(like).unwrap().permissions().mode();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(mode)).unwrap();
    out
}

/// `backup download live b1 --part PART -o FILE`.
fn download_args<'a>(part: &'a str, file: &'a str) -> [&'a str; 8] {
    [
        "backup", "download", "live", "b1", "--part", part, "-o", file,
    ]
}

/// Files in `dir` whose names start with `.` (partial downloads).
fn hidden_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn parts_download_as_files_the_standard_tools_read() {
    let daemon = backed_up();
    let out = daemon.path("out");
    std::fs::create_dir_all(&out).unwrap();

    // Code as tar: GNU tar unpacks exactly the tree that was backed up.
    let tar = out.join("code.tar");
    let result = daemon.json(&download_args("code", tar.to_str().unwrap()));
    assert_eq!(result["format"], "tar", "{result}");
    assert_eq!(
        result["bytes"].as_u64(),
        Some(std::fs::metadata(&tar).unwrap().len())
    );
    let app = daemon.path("live/app");
    assert_same_tree(&app, &untar(&daemon, &tar, &[], &app));
    assert_eq!(
        std::fs::metadata(&tar).unwrap().permissions().mode() & 0o777,
        0o600,
        "a download is private to its user"
    );

    // Files as tar.zst (chosen by the name): the excluded cache is not in it.
    let zst = out.join("uploads.tar.zst");
    let line = daemon
        .ctl(&download_args("files:uploads", zst.to_str().unwrap()))
        .ok()
        .stdout;
    assert!(
        line.starts_with("wrote part files:uploads of backup b1 (tar.zst, "),
        "{line}"
    );
    let unpacked = untar(&daemon, &zst, &["--zstd"], &daemon.path("live/uploads"));
    assert_eq!(
        std::fs::read(unpacked.join("photo.jpg")).unwrap(),
        std::fs::read(daemon.path("live/uploads/photo.jpg")).unwrap()
    );
    assert!(
        !unpacked.join("cache/tmp.bin").exists(),
        "excluded paths are not backed up"
    );

    // A database as its native dump: a SQLite file sqlite3 opens.
    let db = out.join("main.db");
    let result = daemon.json(&download_args("database:main", db.to_str().unwrap()));
    assert_eq!(
        (&result["format"], &result["dump"]),
        (&"native".into(), &"sqlite".into())
    );
    let rows = Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA integrity_check; SELECT group_concat(v) FROM t;")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&rows.stdout), "ok\na,b,c\n");

    // To standard output (a pipe here): the bytes on stdout, the summary on stderr.
    let piped = daemon.ctl(&download_args("database:main", "-"));
    assert_eq!(piped.status, 0, "{}", piped.stderr);
    assert!(
        piped.stderr.contains("to standard output"),
        "{}",
        piped.stderr
    );
    let raw = Command::new(env!("CARGO_BIN_EXE_envsnapctl"))
        .arg("--socket")
        .arg(daemon.path("run/envsnapd.sock"))
        .args(download_args("database:main", "-"))
        .output()
        .unwrap();
    assert_eq!(raw.stdout, std::fs::read(&db).unwrap());

    // Each download is in the activity log, with who asked.
    let log = daemon.json(&["log", "live"]);
    let downloads = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "download" && e["outcome"] == "succeeded")
        .count();
    assert_eq!(downloads, 5, "{log}");
    assert!(hidden_files(&out).is_empty(), "{:?}", hidden_files(&out));
}

#[test]
fn bad_downloads_fail_in_one_line_and_write_nothing() {
    let daemon = backed_up();
    let out = daemon.path("out");
    std::fs::create_dir_all(&out).unwrap();
    let target = out.join("x");
    let target_arg = target.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["live", "b1", "--part", "nope"],
            "envsnapctl: backup b1 has no part nope (it has: code, files:uploads, database:main)",
        ),
        (
            &["live", "b1", "--part", "code", "--format", "native"],
            "envsnapctl: part code is a directory tree: download it as tar or tar.zst, not \"native\"",
        ),
        (
            &["live", "b1", "--part", "database:main", "--format", "tar"],
            "envsnapctl: part database:main is a sqlite dump: it downloads as its native file (format native), not \"tar\"",
        ),
        (
            &["live", "missing", "--part", "code"],
            "envsnapctl: environment live has no backup \"missing\"",
        ),
        (
            &["nowhere", "b1", "--part", "code"],
            "envsnapctl: unknown environment \"nowhere\"",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["backup", "download"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", target_arg]);
        let failed = daemon.ctl(&all);
        assert_ne!(failed.status, 0, "{args:?} should fail");
        assert_eq!(failed.stderr.trim(), expected, "{args:?}");
        assert!(!target.exists(), "{args:?} left a file");
        assert!(
            hidden_files(&out).is_empty(),
            "{args:?} left {:?}",
            hidden_files(&out)
        );
    }

    // A local directory store cannot sign URLs: a link is refused, saying what to use.
    let refused = daemon.ctl(&["backup", "link", "live", "b1", "--part", "code"]);
    assert_eq!(
        refused.stderr.trim(),
        format!(
            "envsnapctl: store file://{} cannot sign URLs (S3, GCS and Azure stores can); use backup download",
            daemon.path("store").display()
        )
    );

    // An existing file stays as it was when a download fails.
    std::fs::write(&target, b"precious").unwrap();
    let failed = daemon.ctl(&download_args("nope", target_arg));
    assert_ne!(failed.status, 0);
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
}

#[test]
fn downloads_need_the_download_right_and_the_callers_own_file_rights() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run envsnapctl as other users");
        return;
    }
    let (reader, downloader) = ("envsnap-e2e", "envsnap-e2e-dl");
    let (reader_uid, downloader_uid) = (ensure_user(reader), ensure_user(downloader));
    let daemon = TestDaemon::start(&format!(
        "[access]\nread = [\"user:{reader}\"]\ndownload = [\"user:{downloader}\"]\n"
    ));
    daemon.open_socket_to_everyone();
    let job = daemon.json(&["backup", "create", "live", "--name", "b1", "--wait"]);
    assert_eq!(job["job"]["state"], "succeeded", "{job}");
    let out = daemon.path("shared");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let target = out.join("code.tar");
    let args = download_args("code", target.to_str().unwrap());

    let denied = daemon.ctl_as(Some(reader_uid), &args);
    assert_eq!(
        denied.stderr.trim(),
        format!("envsnapctl: user {reader} may not download on environment live")
    );
    assert!(!target.exists());
    assert!(hidden_files(&out).is_empty(), "{:?}", hidden_files(&out));

    // Allowed: the file is the caller's own.
    let done = daemon.ctl_as(Some(downloader_uid), &args);
    assert_eq!(done.status, 0, "{}", done.stderr);
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), downloader_uid);

    // A path the caller cannot write stays out of reach: the daemon never opens it.
    let private = daemon.path("private");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let forbidden = private.join("code.tar");
    let refused = daemon.ctl_as(
        Some(downloader_uid),
        &download_args("code", forbidden.to_str().unwrap()),
    );
    assert_ne!(refused.status, 0);
    assert!(
        refused.stderr.contains("Permission denied"),
        "{}",
        refused.stderr
    );
    assert!(!forbidden.exists());
}

/// Sends a download request over a raw socket, then `then` on the socket; returns
/// the daemon's final line.
fn raw_download(daemon: &TestDaemon, then: impl FnOnce(&std::os::unix::net::UnixStream)) -> String {
    let socket = std::os::unix::net::UnixStream::connect(daemon.path("run/envsnapd.sock")).unwrap();
    let request =
        r#"{"v":1,"command":"backup-download","args":{"env":"live","backup":"b1","part":"code"}}"#;
    (&socket)
        .write_all(format!("{request}\n").as_bytes())
        .unwrap();
    let mut lines = BufReader::new(socket.try_clone().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert_eq!(first, r#"{"type":"send-file"}"#);
    then(&socket);
    lines.next().unwrap().unwrap()
}

#[test]
fn a_peer_that_passes_no_proper_file_gets_an_error() {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let daemon = backed_up();

    let reply = raw_download(&daemon, |socket| {
        (&*socket).write_all(b"F").unwrap();
    });
    assert!(
        reply.contains("receiving the file: expected exactly one file descriptor from the client"),
        "{reply}"
    );

    let read_only = std::fs::File::open(daemon.path("envsnap.toml")).unwrap();
    let reply = raw_download(&daemon, |socket| {
        let fds = [read_only.as_raw_fd()];
        sendmsg::<()>(
            socket.as_raw_fd(),
            &[std::io::IoSlice::new(b"F")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
    });
    assert!(
        reply.contains("the file passed is not open for writing"),
        "{reply}"
    );
    assert_eq!(
        std::fs::read_to_string(daemon.path("envsnap.toml"))
            .unwrap()
            .len(),
        read_only.metadata().unwrap().len() as usize
    );
}

/// `backup download -o -` into a pipe nobody reads: the download fails once the
/// reader has stalled for `daemon.stall_timeout`, and the repository is free again
/// (a prune, which waits for readers, runs).
#[test]
fn a_reader_that_stops_reading_fails_the_download_and_frees_the_store() {
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    let daemon = TestDaemon::start_in(dir, |d| {
        standard_config(d, "").replace("[daemon]\n", "[daemon]\nstall_timeout = \"2s\"\n")
    });
    // Far more than a pipe holds.
    let noise: Vec<u8> = (0..8u64 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(daemon.path("live/uploads/noise.bin"), noise).unwrap();
    daemon.json(&["backup", "create", "live", "--name", "b1", "--wait"]);
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_envsnapctl"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args([
            "backup",
            "download",
            "live",
            "b1",
            "--part",
            "files:uploads",
        ])
        .args(["-o", "-"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(writer))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the download never gave up"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("the reader stopped reading for 2s (daemon.stall_timeout)"),
        "{stderr}"
    );
    let pruned = daemon.json(&["prune"]);
    assert!(pruned["store"].is_object(), "{pruned}");
    drop(reader);
}
