//! Where a download's bytes go: the client's file, written so that a reader who
//! stops reading cannot hold the daemon.
//!
//! A download writes into a descriptor the client passed. Into a regular file that
//! is an ordinary blocking write. A pipe (`envsnapctl ... -o - | slow-consumer`) is
//! different: a consumer that stops reading would block the write, and with it the
//! connection and the repository's read lock (prune waits), forever. Making the
//! descriptor non-blocking is not an option: the flag lives in the open file
//! description the client (and its shell, and the consumer's siblings) share. So
//! the daemon opens the pipe again through `/proc/self/fd/N`, which gives a new
//! description of the same pipe, its own, non-blocking, and every write on it must
//! make progress within `daemon.stall_timeout`. A socket passed as the output gets a
//! send timeout (`SO_SNDTIMEO`) of the same length instead (a socket cannot be
//! opened again), which makes a stalled blocking write fail. Other kinds (a
//! terminal) are written as they are.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::time::{Instant, Sleep};

/// A download's output, ready to be written.
pub type Output = Pin<Box<dyn AsyncWrite + Send>>;

/// The passed descriptor as an output (see the module's documentation), and whether
/// it is a regular file (to be synced at the end).
pub fn open(file: OwnedFd, stall: Duration) -> io::Result<(Output, bool)> {
    use nix::sys::stat::{SFlag, fstat};
    let kind = SFlag::from_bits_truncate(fstat(&file)?.st_mode) & SFlag::S_IFMT;
    let output: Output = match kind {
        SFlag::S_IFIFO => Box::pin(Stalling::new(reopened_pipe(&file)?, stall)),
        SFlag::S_IFSOCK => {
            let timeout =
                nix::sys::time::TimeVal::new(stall.as_secs() as _, stall.subsec_micros() as _);
            nix::sys::socket::setsockopt(&file, nix::sys::socket::sockopt::SendTimeout, &timeout)?;
            Box::pin(tokio::fs::File::from_std(std::fs::File::from(file)))
        }
        _ => Box::pin(tokio::fs::File::from_std(std::fs::File::from(file))),
    };
    Ok((output, kind == SFlag::S_IFREG))
}

/// The pipe behind `file`, opened again for writing, non-blocking. Fails when its
/// reader is gone (`ENXIO`).
fn reopened_pipe(file: &OwnedFd) -> io::Result<tokio::net::unix::pipe::Sender> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let reopened = std::fs::File::options()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENXIO) => io::Error::other("nobody reads the pipe"),
            _ => e,
        })?;
    tokio::net::unix::pipe::Sender::from_file(reopened)
}

/// A writer whose every write and flush must make progress within `limit`.
struct Stalling<W> {
    inner: W,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<W> Stalling<W> {
    fn new(inner: W, limit: Duration) -> Self {
        Stalling {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }

    /// Passes on a ready outcome and starts the clock again; a pending one fails
    /// once the deadline has passed.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(outcome) => {
                let next = Instant::now() + self.limit;
                self.deadline.as_mut().reset(next);
                Poll::Ready(outcome)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the reader stopped reading for {:?} (daemon.stall_timeout)",
                        self.limit
                    ),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Stalling<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_pipe_nobody_reads_times_out_and_leaves_the_callers_description_blocking() {
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (mut output, regular) =
            open(writer.try_clone().unwrap(), Duration::from_millis(300)).unwrap();
        assert!(!regular);
        let error = output.write_all(&vec![7u8; 1 << 20]).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "the reader stopped reading for 300ms (daemon.stall_timeout)"
        );
        let flags = nix::fcntl::fcntl(&writer, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(
            flags & libc::O_NONBLOCK,
            0,
            "the client's pipe stays blocking"
        );
        drop(reader);
    }

    #[tokio::test]
    async fn a_pipe_whose_reader_is_gone_fails_at_once() {
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        drop(reader);
        // Refused at open (a named fifo) or at the first write (broken pipe).
        let written = async {
            let (mut output, _) = open(writer, Duration::from_secs(60))?;
            output.write_all(b"data").await
        };
        let started = std::time::Instant::now();
        assert!(written.await.is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
