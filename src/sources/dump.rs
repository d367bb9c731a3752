//! Streaming a dump tool's output into the repository.
//!
//! [`DumpStream`] is the child's stdout as an `AsyncRead`. At end of stream it waits
//! for the child and turns a non-zero exit into a read error, so a dump that dies
//! after writing part of its output fails `add_stream` before the part is accepted;
//! the tool's failure (its last stderr line) is kept for the error message, which
//! [`store_dump`] gives instead of the read error it caused.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::process::{Child, ChildStdout, Command};

use super::error::SourceError;
use super::tool::{TOOL_PIPE_SIZE, ToolError, collect_stderr, spawn_tool, wait_for};
use crate::repo::writer::PartWriter;

type Finishing = Pin<Box<dyn Future<Output = Result<(), ToolError>> + Send>>;

/// A dump tool's stdout. It ends only after the tool exited successfully; a failed
/// tool makes the final read fail, and [`DumpFailure`] tells why.
pub(super) struct DumpStream {
    stdout: ChildStdout,
    /// Until end of stream: the child and its stderr collector.
    running: Option<(Child, tokio::task::JoinHandle<Vec<u8>>)>,
    finishing: Option<Finishing>,
    tool: String,
    failure: Arc<Mutex<Option<ToolError>>>,
}

/// Read after the stream was consumed: why the tool failed, if it did.
#[derive(Clone)]
pub(super) struct DumpFailure(Arc<Mutex<Option<ToolError>>>);

impl DumpFailure {
    fn take(&self) -> Option<ToolError> {
        self.0.lock().expect("dump failure lock").take()
    }
}

impl DumpStream {
    pub(super) fn spawn(
        command: &mut Command,
        tool: &str,
    ) -> Result<(DumpStream, DumpFailure), ToolError> {
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
                wait_for(&mut child, stderr, &tool).await
            }));
        }
        let Some(finishing) = this.finishing.as_mut() else {
            return Poll::Ready(Ok(())); // finished: end of stream
        };
        let outcome = ready!(finishing.as_mut().poll(cx));
        this.finishing = None;
        match outcome {
            Ok(()) => Poll::Ready(Ok(())),
            Err(failure) => {
                let message = failure.to_string();
                *this.failure.lock().expect("dump failure lock") = Some(failure);
                Poll::Ready(Err(io::Error::other(message)))
            }
        }
    }
}

/// Streams a dump tool's output into `writer` as the part `part`. The part is
/// accepted only if the tool exited successfully.
pub(super) async fn store_dump(
    writer: &PartWriter,
    part: &str,
    format: &str,
    kind: &'static str,
    stream: impl AsyncRead + Unpin + Send + 'static,
    failure: DumpFailure,
) -> Result<(), SourceError> {
    match writer.add_stream(part, format, stream).await {
        Ok(_) => Ok(()),
        Err(e) => Err(match failure.take() {
            Some(failure) => SourceError::unnamed(kind, failure),
            None => SourceError::Repo(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

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
        assert_eq!(
            failure.take().map(|f| f.to_string()).as_deref(),
            Some(expected)
        );

        let mut command = Command::new("sh");
        command.args(["-c", "printf whole"]);
        let (mut stream, failure) = DumpStream::spawn(&mut command, "fake-dump").unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"whole");
        assert!(failure.take().is_none());
    }
}
