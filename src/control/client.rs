//! The client side of the control protocol: one request per connection.
//!
//! [`Client::call`] connects to the daemon's socket, writes one [`Envelope`] line, then
//! reads reply lines: [`Reply::Progress`] lines go to the caller's callback, and the
//! first [`Reply::Result`] or [`Reply::Error`] ends the call. Every reply line is
//! bounded by [`MAX_REPLY`], so a misbehaving peer cannot make the client buffer
//! without limit.
//!
//! Failure: each way a call can fail is its own [`ClientError`] variant, worded for the
//! one-line message `envsnapctl` prints. A daemon that closes the connection before
//! its final reply (it crashed, or was stopped) is [`ClientError::Closed`], never a
//! silent success.

use std::io;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use serde_json::value::RawValue;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{Envelope, ErrorCode, MAX_REPLY, PROTOCOL_VERSION, Progress, Reply, Request};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to envsnapd at {}: {}{}", socket.display(), os_reason(source), connect_hint(source))]
    Connect { socket: PathBuf, source: io::Error },
    #[error("lost the connection to envsnapd: {}", os_reason(.0))]
    Io(#[source] io::Error),
    #[error("envsnapd closed the connection before its final reply")]
    Closed,
    #[error("envsnapd sent a reply line longer than {MAX_REPLY} bytes")]
    TooLarge,
    #[error("envsnapd asked for more files than this request has")]
    UnexpectedFileRequest,
    #[error("envsnapd sent a reply this client does not understand: {0}")]
    BadReply(#[source] serde_json::Error),
    /// The daemon answered with an error: `code` is stable, `message` is for people.
    #[error("{message}")]
    Daemon { code: ErrorCode, message: String },
}

/// A handle on the daemon's control socket. Cheap: it connects anew for each call.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `request` and returns the `data` of the daemon's result. Progress events
    /// received before it are passed to `on_progress` in order.
    pub async fn call(
        &self,
        request: Request,
        on_progress: impl FnMut(&Progress),
    ) -> Result<Box<RawValue>, ClientError> {
        self.call_with_files(request, &[], on_progress).await
    }

    /// As [`Client::call`], passing `files` (opened by the caller), one each time the
    /// daemon asks (`Reply::SendFile`): a download writes into its file, an import
    /// reads its files.
    pub async fn call_with_files(
        &self,
        request: Request,
        files: &[BorrowedFd<'_>],
        mut on_progress: impl FnMut(&Progress),
    ) -> Result<Box<RawValue>, ClientError> {
        let mut files = files.iter();
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (read_half, mut write_half) = stream.into_split();

        let envelope = Envelope {
            v: PROTOCOL_VERSION,
            request,
        };
        let mut line = serde_json::to_vec(&envelope).expect("requests always serialize");
        line.push(b'\n');
        let sent = match write_half.write_all(&line).await {
            Ok(()) => write_half.flush().await,
            Err(e) => Err(e),
        };

        let mut reader = BufReader::new(read_half);
        let mut buffer = Vec::new();
        if let Err(e) = sent {
            // A daemon that refuses the connection at once (too many clients) writes
            // why and closes before reading the request: its line beats the broken pipe.
            let refused = read_bounded_line(&mut reader, &mut buffer, MAX_REPLY).await;
            return match (refused, serde_json::from_slice::<Reply>(&buffer)) {
                (Ok(true), Ok(Reply::Error(error))) => Err(ClientError::Daemon {
                    code: error.code,
                    message: error.message,
                }),
                _ => Err(ClientError::Io(e)),
            };
        }
        loop {
            if !read_bounded_line(&mut reader, &mut buffer, MAX_REPLY).await? {
                return Err(ClientError::Closed);
            }
            // A result is kept as the JSON text it came as: a listing of thousands of
            // backups need not be built into a tree only to be printed again.
            let head: ReplyHead<'_> =
                serde_json::from_slice(&buffer).map_err(ClientError::BadReply)?;
            if head.kind == "result" {
                return head
                    .data
                    .map(RawValue::to_owned)
                    .ok_or_else(|| ClientError::BadReply(serde::de::Error::missing_field("data")));
            }
            match serde_json::from_slice::<Reply>(&buffer).map_err(ClientError::BadReply)? {
                Reply::Progress(progress) => on_progress(&progress),
                Reply::SendFile => {
                    let file = files.next().ok_or(ClientError::UnexpectedFileRequest)?;
                    super::fdpass::send_file(write_half.as_ref(), *file)
                        .await
                        .map_err(ClientError::Io)?;
                }
                Reply::Result { .. } => unreachable!("handled above"),
                Reply::Error(error) => {
                    return Err(ClientError::Daemon {
                        code: error.code,
                        message: error.message,
                    });
                }
            }
        }
    }
}

/// The part of a reply line needed to tell a result from the rest.
#[derive(serde::Deserialize)]
struct ReplyHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// Reads one `\n`-terminated line into `line` (without the newline). Returns false at a
/// clean end of stream. A line of `max` bytes or more (newline included) is
/// [`ClientError::TooLarge`]; the stream ending inside a line is [`ClientError::Closed`]
/// unless what came is a complete JSON document (a peer that omits the last newline).
async fn read_bounded_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
    max: usize,
) -> Result<bool, ClientError> {
    line.clear();
    loop {
        let available = reader.fill_buf().await.map_err(ClientError::Io)?;
        if available.is_empty() {
            if line.is_empty() {
                return Ok(false);
            }
            return match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
                Ok(_) => Ok(true),
                Err(_) => Err(ClientError::Closed),
            };
        }
        let (taken, complete) = match available.iter().position(|&byte| byte == b'\n') {
            Some(newline) => (newline + 1, true),
            None => (available.len(), false),
        };
        // The newline counts towards the limit, as in the protocol's definition.
        if line.len() + taken > max {
            return Err(ClientError::TooLarge);
        }
        line.extend_from_slice(&available[..taken]);
        reader.consume(taken);
        if complete {
            line.pop();
            return Ok(true);
        }
    }
}

/// The OS's description of an error without Rust's " (os error N)" suffix.
fn os_reason(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_owned(),
        None => error.to_string(),
    }
}

fn connect_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => " (is the daemon running?)",
        io::ErrorKind::PermissionDenied => " (is your user in the socket's group?)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::ErrorReply;
    use tokio::net::UnixListener;

    /// Serves one connection: reads the request line, then writes `reply` raw bytes and
    /// closes. Returns the socket path (kept alive by the returned tempdir).
    async fn fake_daemon(
        reply: Vec<u8>,
    ) -> (tempfile::TempDir, PathBuf, tokio::task::JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("envsnapd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read_half, mut write_half) = stream.into_split();
            let mut request = String::new();
            BufReader::new(read_half)
                .read_line(&mut request)
                .await
                .unwrap();
            // The client may have given up already (over-long line): ignore write errors.
            let _ = write_half.write_all(&reply).await;
            request
        });
        (dir, socket, server)
    }

    fn line(reply: &Reply) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(reply).unwrap();
        bytes.push(b'\n');
        bytes
    }

    #[tokio::test]
    async fn progress_then_result() {
        let progress = Progress {
            job: 7,
            state: super::super::protocol::JobState::Running,
            bytes_done: 10,
            parts_done: 1,
            parts_total: 3,
            part: "code".into(),
            rate: 5,
            limit: None,
        };
        let mut reply = line(&Reply::Progress(progress.clone()));
        reply.extend(line(&Reply::Result {
            data: serde_json::json!({ "id": 7 }),
        }));
        let (_dir, socket, server) = fake_daemon(reply).await;

        let mut seen = Vec::new();
        let request = Request::JobWatch { id: 7 };
        let data = Client::new(&socket)
            .call(request.clone(), |p| seen.push(p.clone()))
            .await
            .unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(data.get()).unwrap(),
            serde_json::json!({ "id": 7 })
        );
        assert_eq!(seen, vec![progress]);

        let sent = server.await.unwrap();
        assert!(sent.ends_with('\n'));
        let envelope: Envelope = serde_json::from_str(&sent).unwrap();
        assert_eq!(
            envelope,
            Envelope {
                v: PROTOCOL_VERSION,
                request
            }
        );
    }

    #[tokio::test]
    async fn error_reply_keeps_code_and_message() {
        let reply = line(&Reply::Error(ErrorReply {
            code: ErrorCode::NotFound,
            message: "no environment x".into(),
        }));
        let (_dir, socket, _server) = fake_daemon(reply).await;
        let error = Client::new(&socket)
            .call(Request::EnvShow { env: "x".into() }, |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(
                &error,
                ClientError::Daemon {
                    code: ErrorCode::NotFound,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(error.to_string(), "no environment x");
    }

    #[tokio::test]
    async fn over_long_line_is_refused() {
        let mut reply = vec![b' '; MAX_REPLY];
        reply.push(b'\n');
        let (_dir, socket, _server) = fake_daemon(reply).await;
        let error = Client::new(&socket)
            .call(Request::Status, |_| {})
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::TooLarge), "{error:?}");
    }

    #[tokio::test]
    async fn early_close_is_an_error() {
        let progress_only = line(&Reply::Progress(Progress {
            job: 1,
            ..Default::default()
        }));
        let truncated = br#"{"type":"res"#.to_vec();
        for reply in [Vec::new(), progress_only, truncated] {
            let (_dir, socket, _server) = fake_daemon(reply).await;
            let error = Client::new(&socket)
                .call(Request::Status, |_| {})
                .await
                .unwrap_err();
            assert!(matches!(error, ClientError::Closed), "{error:?}");
            assert_eq!(
                error.to_string(),
                "envsnapd closed the connection before its final reply"
            );
        }
    }

    #[tokio::test]
    async fn last_line_without_newline_is_accepted() {
        let (_dir, socket, _server) =
            fake_daemon(br#"{"type":"result","data":[1,2]}"#.to_vec()).await;
        let data = Client::new(&socket)
            .call(Request::EnvList, |_| {})
            .await
            .unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(data.get()).unwrap(),
            serde_json::json!([1, 2])
        );
    }

    #[tokio::test]
    async fn garbage_reply_is_reported() {
        let (_dir, socket, _server) = fake_daemon(b"hello\n".to_vec()).await;
        let error = Client::new(&socket)
            .call(Request::Status, |_| {})
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::BadReply(_)), "{error:?}");
    }

    #[tokio::test]
    async fn missing_socket_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("absent.sock");
        let error = Client::new(&socket)
            .call(Request::Status, |_| {})
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "cannot connect to envsnapd at {}: No such file or directory (is the daemon running?)",
                socket.display()
            )
        );
    }

    #[tokio::test]
    async fn bounded_reader_splits_lines() {
        let mut reader = BufReader::with_capacity(4, &b"ab\ncdefgh\n"[..]);
        let mut line = Vec::new();
        assert!(read_bounded_line(&mut reader, &mut line, 16).await.unwrap());
        assert_eq!(line, b"ab");
        assert!(read_bounded_line(&mut reader, &mut line, 16).await.unwrap());
        assert_eq!(line, b"cdefgh");
        assert!(!read_bounded_line(&mut reader, &mut line, 16).await.unwrap());
        // Exactly max bytes with the newline fits; one more does not.
        let mut reader = BufReader::new(&b"abc\n"[..]);
        assert!(read_bounded_line(&mut reader, &mut line, 4).await.unwrap());
        let mut reader = BufReader::new(&b"abcd\n"[..]);
        assert!(matches!(
            read_bounded_line(&mut reader, &mut line, 4).await,
            Err(ClientError::TooLarge)
        ));
    }
}
