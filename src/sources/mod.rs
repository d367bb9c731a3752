//! Part sources: how each kind of part is read for a backup.
//!
//! Trees (code and mounts) go straight to the engine's archiver. Databases are dumped
//! with their native consistent method and streamed into the repository as a stream
//! part whose `format` ([`format_for`]) says what the stream is. This is the only place
//! that talks to database engines.
//!
//! Server databases (PostgreSQL, MariaDB, Redis) are dumped by their own tools run as
//! child processes. The helpers at the end of this file are shared by those modules:
//!
//! - [`DumpStream`] is the child's stdout as an `AsyncRead`. At end of stream it waits
//!   for the child and turns a non-zero exit into a read error, so a dump that dies
//!   after writing part of its output fails `add_stream` before the part is accepted;
//!   the tool's last stderr line is kept for the error message.
//! - [`feed_tool`] streams a stored part into a tool's stdin (`pg_restore`, `mariadb`).
//! - [`SecretFile`] holds a password for a tool (PGPASSFILE, `--defaults-extra-file`)
//!   in a 0600 file that is removed when dropped. Passwords never go on argv (other
//!   users see it in `ps`) and are never logged.

pub mod demo;
pub mod mariadb;
mod pg_roles;
pub mod postgres;
pub mod redis;
pub mod sqlite;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::process::{Child, ChildStdout, Command};

use tokio_util::sync::CancellationToken;

use crate::config::{DatabaseConfig, DatabaseKind};
use crate::repo::RepoError;
use crate::repo::writer::BackupWriter;

/// Why a database could not be dumped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("database {name} ({kind}): {message}")]
    Dump {
        name: String,
        kind: &'static str,
        message: String,
    },
    #[error(transparent)]
    Repo(#[from] RepoError),
}

pub fn kind_name(kind: DatabaseKind) -> &'static str {
    match kind {
        DatabaseKind::Postgres => "postgres",
        DatabaseKind::Mariadb => "mariadb",
        DatabaseKind::Sqlite => "sqlite",
        DatabaseKind::Redis => "redis",
    }
}

/// The stream format of a database part of `kind`: the manifest's `format` field.
pub fn format_for(kind: DatabaseKind) -> &'static str {
    match kind {
        DatabaseKind::Postgres => postgres::FORMAT,
        DatabaseKind::Mariadb => mariadb::FORMAT,
        DatabaseKind::Sqlite => sqlite::FORMAT,
        DatabaseKind::Redis => redis::FORMAT,
    }
}

/// Loads the stream part `part` of `manifest` into the database `db` (the part
/// `target_part`); credential files go to `scratch`, commands get `timeout`.
pub async fn restore_database(
    repo: &crate::repo::Repository,
    manifest: &crate::repo::manifest::Manifest,
    part: &str,
    target_part: &str,
    db: &DatabaseConfig,
    scratch: &Path,
    timeout: std::time::Duration,
) -> Result<(), SourceError> {
    let name = target_part.trim_start_matches("database:").to_owned();
    let fail = |message: String| SourceError::Dump {
        name: name.clone(),
        kind: kind_name(db.kind),
        message,
    };
    let format = manifest
        .part(part)
        .map(|p| p.format.clone())
        .unwrap_or_default();
    if format != format_for(db.kind) {
        return Err(fail(format!(
            "part {part} holds a {format:?} dump, which cannot be loaded into a {} database",
            kind_name(db.kind)
        )));
    }
    let restored = match db.kind {
        DatabaseKind::Sqlite => {
            let path = db
                .path
                .as_deref()
                .ok_or_else(|| fail("no path configured".into()))?;
            sqlite::restore(repo, manifest, part, path).await
        }
        DatabaseKind::Postgres => postgres::restore(repo, manifest, part, db, scratch).await,
        DatabaseKind::Mariadb => mariadb::restore(repo, manifest, part, db, scratch).await,
        DatabaseKind::Redis => redis::restore(repo, manifest, part, db, timeout).await,
    };
    restored.map_err(|e| match e {
        SourceError::Dump { message, .. } => fail(message),
        other => other,
    })
}

/// Dumps one database into `writer` as the stream part `part`.
pub async fn backup_database(
    writer: &mut BackupWriter,
    part: &str,
    db: &DatabaseConfig,
    scratch: &Path,
    cancel: &CancellationToken,
) -> Result<(), SourceError> {
    let name = part.trim_start_matches("database:").to_owned();
    let fail = |message: String| SourceError::Dump {
        name: name.clone(),
        kind: kind_name(db.kind),
        message,
    };
    let stored = match db.kind {
        DatabaseKind::Sqlite => {
            let path = db
                .path
                .as_deref()
                .ok_or_else(|| fail("no path configured".into()))?;
            sqlite::backup(writer, part, path, scratch, cancel).await
        }
        DatabaseKind::Postgres => postgres::backup(writer, part, db, scratch).await,
        DatabaseKind::Mariadb => mariadb::backup(writer, part, db, scratch).await,
        DatabaseKind::Redis => redis::backup(writer, part, db).await,
    };
    stored.map_err(|e| match e {
        SourceError::Dump { message, .. } => fail(message),
        other => other,
    })
}

/// A dump error whose database name the dispatcher fills in.
fn tool_error(kind: &'static str, message: impl Into<String>) -> SourceError {
    SourceError::Dump {
        name: String::new(),
        kind,
        message: message.into(),
    }
}

/// The first of `names` found on `PATH`, else in `extra_dirs` (in order).
fn find_tool(names: &[&str], extra_dirs: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(extra_dirs.iter().cloned())
        .collect();
    names.iter().find_map(|name| {
        dirs.iter()
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// Reads a password file; a trailing newline is not part of the password.
fn read_password(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// A file only its owner can read, holding credentials for one tool run; removed
/// when dropped.
struct SecretFile {
    path: PathBuf,
}

impl SecretFile {
    fn create(dir: &Path, prefix: &str, contents: &str) -> Result<SecretFile, String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut random = [0u8; 6];
        getrandom::fill(&mut random).expect("the operating system's random source failed");
        let path = dir.join(format!("{prefix}-{}", hex::encode(random)));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let secret = SecretFile { path };
        file.write_all(contents.as_bytes())
            .and_then(|()| file.flush())
            .map_err(|e| format!("{}: {e}", secret.path.display()))?;
        Ok(secret)
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The last non-empty line of a tool's stderr.
fn last_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// How a finished tool is described in an error: exit status and last stderr line.
fn failure_message(tool: &str, status: std::process::ExitStatus, stderr: &[u8]) -> String {
    let code = status.code().map_or_else(
        || "was killed by a signal".to_owned(),
        |c| format!("exited with status {c}"),
    );
    match last_line(stderr) {
        last if last.is_empty() => format!("{tool} {code}"),
        last => format!("{tool} {code}: {last}"),
    }
}

/// Stderr is kept up to this size (the tail matters: it holds the error).
const STDERR_KEEP: usize = 64 * 1024;

/// Collects a child's stderr in the background, keeping its tail.
fn collect_stderr(stderr: tokio::process::ChildStderr) -> tokio::task::JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut stderr = stderr;
        let mut kept = Vec::new();
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buffer[..n]);
            if kept.len() > STDERR_KEEP {
                kept.drain(..kept.len() - STDERR_KEEP / 2);
            }
        }
        kept
    })
}

fn spawn_tool(command: &mut Command, tool: &str, stdin: Stdio) -> Result<Child, String> {
    command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{tool} could not be started: {e}"))
}

/// Runs a tool to its end with `input` on stdin; returns its stdout.
async fn run_tool(command: &mut Command, tool: &str, input: &[u8]) -> Result<String, String> {
    let mut child = spawn_tool(command, tool, Stdio::piped())?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let stderr = collect_stderr(child.stderr.take().expect("piped"));
    let input = input.to_vec();
    let writer = tokio::spawn(async move {
        // A tool that exits early closes the pipe; its status says why.
        let _ = stdin.write_all(&input).await;
    });
    let mut out = Vec::new();
    let read = stdout.read_to_end(&mut out).await;
    let status = child
        .wait()
        .await
        .map_err(|e| format!("{tool}: cannot wait for it: {e}"))?;
    let _ = writer.await;
    let err = stderr.await.unwrap_or_default();
    if !status.success() {
        return Err(failure_message(tool, status, &err));
    }
    read.map_err(|e| format!("{tool}: cannot read its output: {e}"))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Streams the stored part `part` into a tool's stdin and waits for it to succeed.
/// The tool's own failure (its last stderr line) wins over the broken pipe it causes.
async fn feed_tool(
    command: &mut Command,
    tool: &str,
    repo: &crate::repo::Repository,
    manifest: &crate::repo::manifest::Manifest,
    part: &str,
) -> Result<(), String> {
    let mut child = spawn_tool(command, tool, Stdio::piped())?;
    let mut stdin = child.stdin.take().expect("piped");
    let _ = nix::fcntl::fcntl(&stdin, nix::fcntl::FcntlArg::F_SETPIPE_SZ(TOOL_PIPE_SIZE));
    let mut stdout = child.stdout.take().expect("piped");
    let stderr = collect_stderr(child.stderr.take().expect("piped"));
    let drain = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await;
    });
    let fed = repo.read_stream(manifest, part, &mut stdin).await;
    let _ = stdin.shutdown().await;
    drop(stdin);
    let status = child
        .wait()
        .await
        .map_err(|e| format!("{tool}: cannot wait for it: {e}"))?;
    let _ = drain.await;
    let err = stderr.await.unwrap_or_default();
    if !status.success() {
        return Err(failure_message(tool, status, &err));
    }
    fed.map(|_| ())
        .map_err(|e| format!("reading part {part} for {tool}: {e}"))
}

/// The pipe capacity asked for a dump's way out of a tool and a restore's way into
/// one (Linux's default limit for users): fewer, larger transfers.
const TOOL_PIPE_SIZE: i32 = 1 << 20;

type Finishing = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A dump tool's stdout. It ends only after the tool exited successfully; a failed
/// tool makes the final read fail, and [`DumpStream::failure`] tells why.
struct DumpStream {
    stdout: ChildStdout,
    /// Until end of stream: the child and its stderr collector.
    running: Option<(Child, tokio::task::JoinHandle<Vec<u8>>)>,
    finishing: Option<Finishing>,
    tool: String,
    failure: Arc<Mutex<Option<String>>>,
}

/// Read after the stream was consumed: why the tool failed, if it did.
#[derive(Clone)]
struct DumpFailure(Arc<Mutex<Option<String>>>);

impl DumpFailure {
    fn take(&self) -> Option<String> {
        self.0.lock().expect("dump failure lock").take()
    }
}

impl DumpStream {
    fn spawn(command: &mut Command, tool: &str) -> Result<(DumpStream, DumpFailure), String> {
        let mut child = spawn_tool(command, tool, Stdio::null())?;
        let stdout = child.stdout.take().expect("piped");
        // A larger pipe lets the tool write on while the repository is busy; where
        // the system refuses (pipe-max-size), the default pipe only costs speed.
        let _ = nix::fcntl::fcntl(&stdout, nix::fcntl::FcntlArg::F_SETPIPE_SZ(TOOL_PIPE_SIZE));
        let stderr = collect_stderr(child.stderr.take().expect("piped"));
        let failure = Arc::new(Mutex::new(None));
        let stream = DumpStream {
            stdout,
            running: Some((child, stderr)),
            finishing: None,
            tool: tool.to_owned(),
            failure: failure.clone(),
        };
        Ok((stream, DumpFailure(failure)))
    }
}

impl AsyncRead for DumpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.finishing.is_none() && this.running.is_some() {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.stdout).poll_read(cx, buf))?;
            if buf.filled().len() > before || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let (mut child, stderr) = this.running.take().expect("checked");
            let tool = this.tool.clone();
            this.finishing = Some(Box::pin(async move {
                let status = child
                    .wait()
                    .await
                    .map_err(|e| format!("{tool}: cannot wait for it: {e}"))?;
                let err = stderr.await.unwrap_or_default();
                match status.success() {
                    true => Ok(()),
                    false => Err(failure_message(&tool, status, &err)),
                }
            }));
        }
        let Some(finishing) = this.finishing.as_mut() else {
            return Poll::Ready(Ok(())); // finished: end of stream
        };
        let outcome = ready!(finishing.as_mut().poll(cx));
        this.finishing = None;
        match outcome {
            Ok(()) => Poll::Ready(Ok(())),
            Err(message) => {
                *this.failure.lock().expect("dump failure lock") = Some(message.clone());
                Poll::Ready(Err(io::Error::other(message)))
            }
        }
    }
}

/// Streams a dump tool's output into `writer` as the part `part`. The part is
/// accepted only if the tool exited successfully.
async fn store_dump(
    writer: &mut BackupWriter,
    part: &str,
    format: &str,
    kind: &'static str,
    stream: impl AsyncRead + Unpin + Send + 'static,
    failure: DumpFailure,
) -> Result<(), SourceError> {
    match writer.add_stream(part, format, stream).await {
        Ok(_) => Ok(()),
        Err(e) => Err(match failure.take() {
            Some(message) => tool_error(kind, message),
            None => SourceError::Repo(e),
        }),
    }
}

/// Replaces the file at `path` with the stream part `part`, atomically and without
/// trusting the directory: the directory of a database is usually writable by the
/// app's user, who could plant a symlink where we write. So the new file gets an
/// unpredictable name, is created exclusively without following links (O_EXCL,
/// O_NOFOLLOW, mode 0600), is checked to start with `magic`, takes the old file's
/// owner and mode through its own descriptor, and only then is renamed over `path`
/// (after `before_rename`, e.g. removing stale side files). Errors are one line.
pub(crate) async fn replace_with_part(
    repo: &crate::repo::Repository,
    manifest: &crate::repo::manifest::Manifest,
    part: &str,
    path: &Path,
    magic: &[u8],
    before_rename: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    use std::io::{Read, Seek};
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).expect("the operating system's random source failed");
    let staged = path.with_file_name(format!(".{name}.envsnap-{}", hex::encode(random)));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&staged)
        .map_err(|e| format!("{}: {e}", staged.display()))?;
    let result = async {
        let mut out = tokio::fs::File::from_std(file);
        repo.read_stream(manifest, part, &mut out)
            .await
            .map_err(|e| e.to_string())?;
        out.sync_all()
            .await
            .map_err(|e| format!("{}: {e}", staged.display()))?;
        let mut file = out.into_std().await;
        let mut header = vec![0u8; magic.len()];
        file.rewind().map_err(|e| e.to_string())?;
        if file.read_exact(&mut header).is_err() || header != magic {
            return Err(format!(
                "part {part} does not hold what {} expects",
                path.display()
            ));
        }
        // The old file's owner and mode, set through our descriptor (never a path).
        if let Ok(old) = std::fs::symlink_metadata(path)
            && old.is_file()
        {
            std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid()))
                .map_err(|e| e.to_string())?;
            file.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o7777))
                .map_err(|e| e.to_string())?;
        }
        before_rename()?;
        std::fs::rename(&staged, path).map_err(|e| format!("{}: {e}", path.display()))
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tool that writes part of its output and then fails must fail the read at the
    /// end of the stream, with its last stderr line kept for the message.
    #[tokio::test]
    async fn a_dump_that_fails_after_writing_fails_at_end_of_stream() {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "printf partial; echo 'first' >&2; echo 'disk full' >&2; exit 3",
        ]);
        let (mut stream, failure) = DumpStream::spawn(&mut command, "fake-dump").unwrap();
        let mut out = Vec::new();
        let err = stream.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(out, b"partial");
        let expected = "fake-dump exited with status 3: disk full";
        assert_eq!(err.to_string(), expected);
        assert_eq!(failure.take().as_deref(), Some(expected));

        let mut command = Command::new("sh");
        command.args(["-c", "printf whole"]);
        let (mut stream, failure) = DumpStream::spawn(&mut command, "fake-dump").unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"whole");
        assert!(failure.take().is_none());
    }

    #[test]
    fn secret_files_are_private_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let secret = SecretFile::create(dir.path(), "pgpass", "*:*:*:*:pw\n").unwrap();
            let mode = std::fs::metadata(secret.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            secret.path().to_path_buf()
        };
        assert!(!path.exists());
    }
}
