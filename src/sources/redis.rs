//! Redis parts: an RDB snapshot from `redis-cli --rdb -`, restored by replacing the
//! server's dump file while it is stopped.
//!
//! Backup: `redis-cli --rdb -` asks the server for a replication snapshot (a
//! consistent point-in-time RDB, made by a fork, as for a replica) and writes it to
//! stdout, which streams into the repository. With diskless replication (the default
//! since Redis 7) the server ends the transfer with a 40-character hex marker;
//! redis-cli 7.0 cuts it off a file but not off stdout, so [`TrimEofMarker`] holds
//! back the last 40 bytes and drops them if they are that marker. A real RDB ends with
//! the byte 0xFF and an 8-byte checksum, which are never 40 hex digits. The part is
//! then exactly the RDB file `redis-server` loads.
//!
//! Restore: run the database's `stop` commands, write the RDB beside `rdb_path`,
//! check its header, give it the old file's owner and mode, rename it over `rdb_path`,
//! run `start`, and wait until `redis-cli PING` answers `PONG` (Redis answers
//! `LOADING` while it reads a large file). A server with `appendonly yes` loads the
//! AOF rather than the RDB at start: turn AOF off for a restore, or the old data
//! comes back.
//!
//! The password reaches redis-cli through `REDISCLI_AUTH`, never argv.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::process::Command;

use super::dump::{DumpStream, store_dump};
use super::error::{DatabaseError, SourceError};
use super::replace::{owner_of, replace_with_part};
use super::secret::read_password;
use super::tool::{find_tool, run_tool};
use crate::config::DatabaseConfig;
use crate::repo::writer::PartWriter;

pub const FORMAT: &str = "redis-rdb";
const KIND: &str = "redis";
/// Length of the end-of-transfer marker of a diskless replication snapshot.
const EOF_MARKER: usize = 40;

fn error(problem: impl Into<DatabaseError>) -> SourceError {
    SourceError::unnamed(KIND, problem)
}

fn redis_cli() -> Result<PathBuf, SourceError> {
    find_tool(&["redis-cli"], &[])
        .ok_or_else(|| error(DatabaseError::NotInstalled("redis-cli".to_owned())))
}

/// redis-cli with the connection flags and the password in its environment.
fn command(db: &DatabaseConfig) -> Result<Command, SourceError> {
    let mut command = Command::new(redis_cli()?);
    if let Some(socket) = &db.socket {
        command.arg("-s").arg(socket);
    }
    if let Some(host) = &db.host {
        command.arg("-h").arg(host);
    }
    if let Some(port) = db.port {
        command.arg("-p").arg(port.to_string());
    }
    if let Some(user) = &db.user {
        command.arg("--user").arg(user);
    }
    command.env_remove("REDISCLI_AUTH");
    if let Some(path) = &db.password_file {
        let password = read_password(path).map_err(error)?;
        command.env("REDISCLI_AUTH", password);
    }
    Ok(command)
}

pub async fn backup(
    writer: &PartWriter,
    part: &str,
    db: &DatabaseConfig,
) -> Result<(), SourceError> {
    let mut dump = command(db)?;
    dump.args(["--rdb", "-"]);
    let (stream, failure) = DumpStream::spawn(&mut dump, "redis-cli").map_err(error)?;
    let trimmed = TrimEofMarker {
        inner: stream,
        held: Vec::new(),
        ended: false,
    };
    store_dump(writer, part, FORMAT, KIND, trimmed, failure).await?;
    // What the server holds now, for a drill to compare with what the RDB loads
    // into (a few keys written meanwhile make a warning there, not a failure).
    let mut info = command(db)?;
    info.args(["INFO", "keyspace"]);
    match run_tool(&mut info, "redis-cli", b"").await {
        Ok(text) => writer.amend(part, |record| record.keys = Some(count_keys(&text))),
        Err(e) => tracing::warn!(part, error = %e, "cannot count the server's keys"),
    }
    // The dump file the server writes, whose owner a restore into a new place needs
    // (the server must be able to read what it is given).
    if let Some(owner) = db.rdb_path.as_deref().and_then(owner_of) {
        writer.amend(part, |record| record.file = Some(owner));
    }
    Ok(())
}

/// Keys in every database of `INFO keyspace` (`db0:keys=3,expires=0,...`).
pub(super) fn count_keys(info: &str) -> u64 {
    info.lines()
        .filter(|l| l.starts_with("db"))
        .filter_map(|l| {
            l.split_once("keys=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Passes a stream through, except a final end-of-transfer marker.
struct TrimEofMarker<R> {
    inner: R,
    /// Bytes read but not yet passed on: the possible marker, and what follows it.
    held: Vec<u8>,
    ended: bool,
}

fn is_marker(tail: &[u8]) -> bool {
    tail.len() == EOF_MARKER
        && tail
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

impl<R: AsyncRead + Unpin> AsyncRead for TrimEofMarker<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.ended {
                if is_marker(&this.held) {
                    this.held.clear();
                }
                let n = this.held.len().min(buf.remaining());
                buf.put_slice(&this.held[..n]);
                this.held.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.held.len() > EOF_MARKER {
                let n = (this.held.len() - EOF_MARKER).min(buf.remaining());
                buf.put_slice(&this.held[..n]);
                this.held.drain(..n);
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 64 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.ended = true;
            }
            this.held.extend_from_slice(read.filled());
        }
    }
}

pub async fn restore(
    repo: &crate::repo::Repository,
    manifest: &crate::repo::manifest::Manifest,
    part: &str,
    db: &DatabaseConfig,
    timeout: Duration,
) -> Result<(), SourceError> {
    let rdb_path = db
        .rdb_path
        .as_deref()
        .ok_or_else(|| error(DatabaseError::NotConfigured("rdb_path")))?;
    let no_vars = BTreeMap::new();
    crate::commands::run_all(&db.stop, &no_vars, timeout)
        .await
        .map_err(|e| error(DatabaseError::Stop(e)))?;
    replace_file(repo, manifest, part, rdb_path).await?;
    crate::commands::run_all(&db.start, &no_vars, timeout)
        .await
        .map_err(|e| error(DatabaseError::Start(e)))?;
    wait_for_pong(db, timeout).await
}

/// Writes the part beside `path` and renames it over `path`.
async fn replace_file(
    repo: &crate::repo::Repository,
    manifest: &crate::repo::manifest::Manifest,
    part: &str,
    path: &Path,
) -> Result<(), SourceError> {
    replace_with_part(repo, manifest, part, path, b"REDIS", || Ok(()))
        .await
        .map_err(error)
}

async fn wait_for_pong(db: &DatabaseConfig, timeout: Duration) -> Result<(), SourceError> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut ping = command(db)?;
        ping.arg("PING");
        match run_tool(&mut ping, "redis-cli", b"").await {
            Ok(answer) if answer.trim() == "PONG" => return Ok(()),
            Ok(answer) => last = answer.trim().to_owned(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(error(DatabaseError::NoPong { timeout, last }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn trimmed(input: Vec<u8>) -> Vec<u8> {
        let mut reader = TrimEofMarker {
            inner: &input[..],
            held: Vec::new(),
            ended: false,
        };
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn the_eof_marker_is_cut_and_nothing_else() {
        let rdb = b"REDIS0010\xfe\x00\xff\x01\x02\x03\x04\x05\x06\x07\x08".to_vec();
        let marker = b"0123456789abcdef0123456789abcdef01234567".to_vec();
        let with_marker = [rdb.clone(), marker].concat();
        assert_eq!(trimmed(with_marker).await, rdb);
        assert_eq!(trimmed(rdb.clone()).await, rdb);
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(trimmed(big.clone()).await, big);
    }
}
