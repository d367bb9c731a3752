//! Dumps to import, checked as they stream: each must start as its kind's dumps do
//! and, where the format tells its own length or end, be whole; none may be longer
//! than `import.max_size`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::config::DatabaseKind;

/// A decompressed input (the parent's `Input`).
type Input = Pin<Box<dyn AsyncRead + Send>>;

/// `input` as a dump of `kind`, checked to start like one; the returned stream fails
/// at its end if the dump is not whole (where the format tells).
pub async fn checked_dump(
    mut input: Input,
    kind: DatabaseKind,
    max_size: u64,
) -> Result<Input, String> {
    let mut head = Vec::with_capacity(HEAD);
    (&mut input)
        .take(HEAD as u64)
        .read_to_end(&mut head)
        .await
        .map_err(|e| format!("the dump is corrupt or truncated: {e}"))?;
    let expected = match kind {
        DatabaseKind::Postgres => "a PostgreSQL custom-format dump (pg_dump -Fc)",
        DatabaseKind::Sqlite => "a SQLite database file",
        DatabaseKind::Redis => "a Redis RDB file",
        DatabaseKind::Mariadb => "a MariaDB/MySQL SQL dump (mariadb-dump)",
    };
    let starts_right = match kind {
        DatabaseKind::Postgres => head.starts_with(b"PGDMP"),
        DatabaseKind::Sqlite => head.starts_with(b"SQLite format 3\0"),
        DatabaseKind::Redis => head.starts_with(b"REDIS"),
        DatabaseKind::Mariadb => looks_like_sql(&head),
    };
    if !starts_right {
        return Err(format!("the file is not {expected}"));
    }
    let end = match kind {
        DatabaseKind::Sqlite => EndCheck::Length(sqlite_length(&head)),
        DatabaseKind::Redis => EndCheck::RdbEof,
        DatabaseKind::Mariadb => EndCheck::DumpCompleted,
        DatabaseKind::Postgres => EndCheck::Length(None),
    };
    let whole = AsyncReadExt::chain(std::io::Cursor::new(head), input);
    Ok(Box::pin(Checked {
        inner: whole,
        end,
        max_size,
        total: 0,
        tail: Vec::new(),
    }))
}

/// Bytes read ahead to recognise a dump.
const HEAD: usize = 100;
/// Bytes kept from the end of a dump for its end check.
const TAIL: usize = 256;

fn looks_like_sql(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let text = text.trim_start();
    !head.contains(&0)
        && ["--", "/*", "SET ", "CREATE ", "DROP ", "USE ", "INSERT "]
            .iter()
            .any(|start| text.starts_with(start))
}

/// The length a SQLite file's header gives (page size × page count), when the count
/// is valid (SQLite 3.7.0 and later write it so).
fn sqlite_length(head: &[u8]) -> Option<u64> {
    let be32 = |at: usize| -> Option<u64> {
        Some(u32::from_be_bytes(head.get(at..at + 4)?.try_into().ok()?).into())
    };
    let page_size: u64 = match u16::from_be_bytes(head.get(16..18)?.try_into().ok()?) {
        1 => 65536,
        size => size.into(),
    };
    let (pages, change_counter, valid_for) = (be32(28)?, be32(24)?, be32(92)?);
    (pages > 0 && change_counter == valid_for).then_some(page_size * pages)
}

/// How a dump's end is checked.
enum EndCheck {
    /// The exact length, when known.
    Length(Option<u64>),
    /// An RDB file ends with the EOF opcode (0xFF) and an 8-byte checksum.
    RdbEof,
    /// mariadb-dump's last line.
    DumpCompleted,
}

/// A dump stream that fails at its end if the dump is not whole, and as soon as it
/// is longer than `max_size`.
struct Checked<R> {
    inner: R,
    end: EndCheck,
    max_size: u64,
    total: u64,
    tail: Vec<u8>,
}

impl<R> Checked<R> {
    fn check_end(&self) -> Result<(), String> {
        let whole = match &self.end {
            EndCheck::Length(None) => true,
            EndCheck::Length(Some(length)) => self.total == *length,
            EndCheck::RdbEof => self.tail.len() >= 9 && self.tail[self.tail.len() - 9] == 0xff,
            EndCheck::DumpCompleted => {
                String::from_utf8_lossy(&self.tail).contains("-- Dump completed")
            }
        };
        match whole {
            true => Ok(()),
            false => Err("the dump is truncated: it does not end as a whole dump does".into()),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Checked<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let fresh = &buf.filled()[before..];
        if fresh.is_empty() && buf.remaining() > 0 {
            return Poll::Ready(self.check_end().map_err(io::Error::other));
        }
        self.total += fresh.len() as u64;
        if self.total > self.max_size {
            return Poll::Ready(Err(io::Error::other(format!(
                "the dump is larger than {} (import.max_size)",
                bytesize::ByteSize(self.max_size).display().iec()
            ))));
        }
        self.tail
            .extend_from_slice(&fresh[fresh.len().saturating_sub(TAIL)..]);
        if self.tail.len() > 2 * TAIL {
            let cut = self.tail.len() - TAIL;
            self.tail.drain(..cut);
        }
        Poll::Ready(Ok(()))
    }
}
