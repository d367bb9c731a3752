//! Reading a stream ahead of the chunker.
//!
//! The chunker works in bursts: it fills its buffer, then cuts and hashes it. Reading
//! a pipe only during the fill would stall the process writing it (a `pg_dump`, and
//! the database server behind it) for every burst, so producer and chunker would take
//! turns instead of running at once. [`ReadAhead`] keeps a task on the runtime
//! draining the stream into blocks at all times, up to a bounded number of blocks
//! ahead, and hands them to the blocking chunker as a plain [`Read`].

use std::io::{self, Read};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

/// Bytes per block handed to the chunker.
const BLOCK: usize = 1 << 20;
/// Blocks read ahead: bounds the memory a fast producer can fill.
const DEPTH: usize = 8;

pub struct ReadAhead {
    blocks: mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    position: usize,
}

impl ReadAhead {
    /// Starts draining `reader` on the current runtime. Dropping the `ReadAhead`
    /// stops the task, which drops `reader`.
    pub fn spawn<R>(reader: R) -> ReadAhead
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let (sender, blocks) = mpsc::channel(DEPTH);
        tokio::spawn(async move {
            let mut reader = reader;
            loop {
                let block = read_block(&mut reader).await;
                let last = !matches!(&block, Ok(data) if !data.is_empty());
                if sender.send(block).await.is_err() || last {
                    return;
                }
            }
        });
        ReadAhead {
            blocks,
            current: Vec::new(),
            position: 0,
        }
    }
}

/// Up to [`BLOCK`] bytes: less only at end of stream (empty there).
async fn read_block<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut block = Vec::with_capacity(BLOCK);
    while block.len() < BLOCK {
        if reader.read_buf(&mut block).await? == 0 {
            break;
        }
    }
    Ok(block)
}

impl Read for ReadAhead {
    /// Blocks until data arrives: call it from a blocking thread, never the runtime.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.position == self.current.len() {
            match self.blocks.blocking_recv() {
                Some(Ok(block)) => {
                    self.current = block;
                    self.position = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0), // end of stream was the last block
            }
        }
        let n = buf.len().min(self.current.len() - self.position);
        buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn reads_everything_in_order_then_the_error() {
        let data: Vec<u8> = (0..3 * BLOCK + 12345).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            ReadAhead::spawn(std::io::Cursor::new(data))
                .read_to_end(&mut out)
                .map(|_| out)
        });
        assert_eq!(read.await.unwrap().unwrap(), expected);

        let failing = AsyncReadExt::chain(&b"partial"[..], failing_reader());
        let read = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let err = ReadAhead::spawn(failing).read_to_end(&mut out).unwrap_err();
            (out, err.to_string())
        });
        let (out, err) = read.await.unwrap();
        assert!(out.is_empty() || out == b"partial");
        assert_eq!(err, "dump failed");
    }

    /// A reader whose first read fails.
    fn failing_reader() -> impl AsyncRead + Unpin + Send + 'static {
        struct Failing;
        impl AsyncRead for Failing {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                std::task::Poll::Ready(Err(io::Error::other("dump failed")))
            }
        }
        Failing
    }
}
