//! Running the database engines' own tools (`pg_dump`, `mariadb`, `redis-cli`...) as
//! child processes: finding them, running one to its end with some input, and
//! streaming a stored part into one's stdin ([`feed_tool`], for `pg_restore` and
//! `mariadb`).
//!
//! A tool that fails is described by its exit status and its last stderr line
//! ([`ToolError::Failed`]): that line is where every one of these tools says what went
//! wrong. Only the tail of stderr is kept, so a chatty tool costs no memory.

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};

use nix::sys::socket::{setsockopt, sockopt};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use crate::repo::RepoError;
use crate::repo::Repository;
use crate::repo::manifest::Manifest;

/// Stderr is kept up to this size (the tail matters: it holds the error).
const STDERR_KEEP: usize = 64 * 1024;

/// The pipe capacity asked for a dump's way out of a tool, and the send buffer of a
/// restore's way into one (Linux's default limit for users): fewer, larger transfers.
pub(super) const TOOL_PIPE_SIZE: i32 = 1 << 20;

/// Why a tool run failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{tool} could not be started: {source}")]
    Start { tool: String, source: io::Error },
    #[error("{tool}: cannot wait for it: {source}")]
    Wait { tool: String, source: io::Error },
    #[error("{tool}: cannot read its output: {source}")]
    Output { tool: String, source: io::Error },
    /// It ran and failed; `last_line` is its last non-empty stderr line, if any.
    #[error("{tool} {}{}", ended(*status), after_colon(last_line))]
    Failed {
        tool: String,
        status: ExitStatus,
        last_line: String,
    },
    /// The stored part could not be read while the tool was fed.
    #[error("reading part {part} for {tool}: {source}")]
    Feed {
        tool: String,
        part: String,
        source: Box<RepoError>,
    },
}

impl ToolError {
    /// How a finished tool is described: exit status and last stderr line.
    pub(super) fn failed(tool: &str, status: ExitStatus, stderr: &[u8]) -> Self {
        ToolError::Failed {
            tool: tool.to_owned(),
            status,
            last_line: last_line(stderr),
        }
    }

    fn wait(tool: &str, source: io::Error) -> Self {
        ToolError::Wait {
            tool: tool.to_owned(),
            source,
        }
    }
}

fn ended(status: ExitStatus) -> String {
    status.code().map_or_else(
        || "was killed by a signal".to_owned(),
        |c| format!("exited with status {c}"),
    )
}

fn after_colon(line: &str) -> String {
    if line.is_empty() {
        String::new()
    } else {
        format!(": {line}")
    }
}

/// The first of `names` found on `PATH`, else in `extra_dirs` (in order).
pub(super) fn find_tool(names: &[&str], extra_dirs: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(extra_dirs.iter().cloned())
        .collect();
    names.iter().find_map(|name| find_tool_in(name, &dirs))
}

/// `name` in the first of `dirs` that has it.
pub(super) fn find_tool_in(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter()
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The last non-empty line of a tool's stderr. `pg_restore` follows its error with
/// the statement that failed (`Command was: CREATE TABLE ... );`), whose last line
/// says nothing: its error is the last line before that block.
fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .iter()
        .rposition(|l| l.starts_with("Command was: "))
        .unwrap_or(lines.len());
    lines[..end]
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map_or("", |l| l.trim())
        .to_owned()
}

/// Collects a child's stderr in the background, keeping its tail.
pub(super) fn collect_stderr(
    stderr: tokio::process::ChildStderr,
) -> tokio::task::JoinHandle<Vec<u8>> {
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

pub(super) fn spawn_tool(
    command: &mut Command,
    tool: &str,
    stdin: Stdio,
) -> Result<Child, ToolError> {
    command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ToolError::Start {
            tool: tool.to_owned(),
            source,
        })
}

/// Waits for a finished tool; a failure is its status and last stderr line.
pub(super) async fn wait_for(
    child: &mut Child,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
    tool: &str,
) -> Result<(), ToolError> {
    let status = child.wait().await.map_err(|e| ToolError::wait(tool, e))?;
    let err = stderr.await.unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(ToolError::failed(tool, status, &err))
    }
}

/// Runs a tool to its end with `input` on stdin; returns its stdout.
pub(super) async fn run_tool(
    command: &mut Command,
    tool: &str,
    input: &[u8],
) -> Result<String, ToolError> {
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
    let status = child.wait().await.map_err(|e| ToolError::wait(tool, e))?;
    let _ = writer.await;
    let err = stderr.await.unwrap_or_default();
    if !status.success() {
        return Err(ToolError::failed(tool, status, &err));
    }
    read.map_err(|source| ToolError::Output {
        tool: tool.to_owned(),
        source,
    })?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Streams the stored part `part` into a tool's stdin and waits for it to succeed.
/// The tool's own failure (its last stderr line) wins over the broken pipe it causes.
pub(super) async fn feed_tool(
    command: &mut Command,
    tool: &str,
    repo: &Repository,
    manifest: &Manifest,
    part: &str,
) -> Result<(), ToolError> {
    feed_tool_through(command, tool, repo, manifest, part, |stdin| stdin).await
}

/// Starts `tool` reading a socket pair as its stdin, not a pipe; returns our end. The
/// tools read their stdin 4 KiB at a time, and a full pipe wakes its writer each time
/// a reader frees a page (a restore of a 500 MB PostgreSQL dump: ~130,000 context
/// switches), where a socket wakes it once its send buffer is three-quarters empty
/// (~19,000).
fn spawn_fed(command: &mut Command, tool: &str) -> Result<(Child, UnixStream), ToolError> {
    let start_error = |source| ToolError::Start {
        tool: tool.to_owned(),
        source,
    };
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(start_error)?;
    // Linux grants at most twice `net.core.wmem_max`; any of it is enough.
    let _ = setsockopt(&ours, sockopt::SndBuf, &(TOOL_PIPE_SIZE as usize));
    ours.set_nonblocking(true).map_err(start_error)?;
    let ours = UnixStream::from_std(ours).map_err(start_error)?;
    let child = spawn_tool(command, tool, Stdio::from(OwnedFd::from(theirs)));
    // The command keeps what it was given. Our copy of the tool's end must close, or
    // a tool that exits early would leave our writes waiting for a reader forever.
    command.stdin(Stdio::null());
    Ok((child?, ours))
}

/// As [`feed_tool`], the part passing through what `wrap` makes of the tool's stdin
/// (a filter of the stream).
pub(super) async fn feed_tool_through<W: AsyncWrite + Unpin>(
    command: &mut Command,
    tool: &str,
    repo: &Repository,
    manifest: &Manifest,
    part: &str,
    wrap: impl FnOnce(UnixStream) -> W,
) -> Result<(), ToolError> {
    let (mut child, stdin) = spawn_fed(command, tool)?;
    let mut stdin = wrap(stdin);
    let mut stdout = child.stdout.take().expect("piped");
    let stderr = collect_stderr(child.stderr.take().expect("piped"));
    let drain = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await;
    });
    let fed = repo.read_stream(manifest, part, &mut stdin).await;
    let _ = stdin.shutdown().await;
    drop(stdin);
    let status = child.wait().await.map_err(|e| ToolError::wait(tool, e))?;
    let _ = drain.await;
    let err = stderr.await.unwrap_or_default();
    if !status.success() {
        return Err(ToolError::failed(tool, status, &err));
    }
    fed.map(|_| ()).map_err(|source| ToolError::Feed {
        tool: tool.to_owned(),
        part: part.to_owned(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failing_statement_is_passed_over_for_the_error() {
        let stderr = b"pg_restore: error: could not execute query: ERROR:  cannot execute \
CREATE TABLE in a read-only transaction\nCommand was: CREATE TABLE public.t (\n    x integer\n);\n\n\n";
        assert_eq!(
            last_line(stderr),
            "pg_restore: error: could not execute query: ERROR:  cannot execute CREATE TABLE \
             in a read-only transaction"
        );
        assert_eq!(
            last_line(b"pg_dump: error: one\npg_dump: detail: two\n"),
            "pg_dump: detail: two"
        );
        assert_eq!(last_line(b"Command was: SELECT 1;\n"), "");
        assert_eq!(last_line(b""), "");
    }

    /// The tool reads everything written, and its end once our side shuts down.
    #[tokio::test]
    async fn a_tool_reads_the_socket_to_its_end() {
        let mut command = Command::new("wc");
        command.arg("-c");
        let (child, mut ours) = spawn_fed(&mut command, "wc").unwrap();
        let data = vec![7u8; 3 << 20];
        ours.write_all(&data).await.unwrap();
        ours.shutdown().await.unwrap();
        drop(ours);
        let output = child.wait_with_output().await.unwrap();
        assert!(output.status.success());
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "3145728");
    }

    /// A tool that exits without reading fails our writes instead of leaving them
    /// waiting (with `command` still alive, as in `feed_tool_through`).
    #[tokio::test]
    async fn a_tool_that_exits_early_fails_the_writes() {
        let mut command = Command::new("true");
        let (mut child, mut ours) = spawn_fed(&mut command, "true").unwrap();
        child.wait().await.unwrap();
        let data = vec![7u8; 16 << 20];
        let written =
            tokio::time::timeout(std::time::Duration::from_secs(20), ours.write_all(&data))
                .await
                .expect("the writes waited for a reader that had exited");
        assert!(written.is_err());
        drop(command);
    }
}
