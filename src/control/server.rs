//! The control socket server: framing and transport, no meaning.
//!
//! Each connection carries one request. The client is identified by the socket's
//! peer credentials (SO_PEERCRED, [`super::peer`]), never by anything it says. Every
//! byte from the socket is hostile: the request line must arrive within
//! [`REQUEST_TIMEOUT`] and fit in [`MAX_MESSAGE`]; garbage gets an error reply, never
//! a crash. Connections are served concurrently, within the per-user and total
//! limits of [`super::limits`] (one user's idle clients cannot lock out the others,
//! nor root).
//!
//! What a request means (which environment and right it concerns, whether the
//! caller has that right, what it does) is the [`Service`]'s business: the server
//! asks it to [`Service::admit`] the request before receiving any file the request
//! passes, then hands it the request, the caller, the files, and a channel for
//! progress lines. The daemon's service is `api::Api`; a test can serve its own.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::fdpass;
use super::limits::{Limits, Place};
use super::peer::{Caller, identify};
use super::protocol::{
    Envelope, ErrorCode, ErrorReply, MAX_FILES, MAX_MESSAGE, PROTOCOL_VERSION, Reply, Request,
};

/// A client must send its request within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A reply line must be taken by the client within this time, or the connection drops.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// After a reply this large, freed memory is handed back to the system.
const LARGE_REPLY: usize = 1 << 20;

/// What the server serves.
pub trait Service: Send + Sync + 'static {
    /// Whether `caller` may make `request`, and whether the request can be served at
    /// all, decided before the server asks for any of its files.
    fn admit(
        &self,
        caller: &Caller,
        request: &Request,
    ) -> impl Future<Output = Result<(), ErrorReply>> + Send;

    /// Serves an admitted request: progress lines go to `replies`, the result or the
    /// error is the final line.
    fn handle(
        &self,
        caller: Caller,
        request: Request,
        files: Vec<OwnedFd>,
        replies: mpsc::Sender<Reply>,
    ) -> impl Future<Output = Result<Box<RawValue>, ErrorReply>> + Send;
}

/// Serves connections on `listener` until `shutdown`.
pub async fn run<S: Service>(listener: UnixListener, service: Arc<S>, shutdown: CancellationToken) {
    let limits = Limits::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let place = match take_place(&limits, &stream) {
            Ok(place) => place,
            Err(message) => {
                tokio::spawn(refuse(stream, message));
                continue;
            }
        };
        let service = service.clone();
        tokio::spawn(async move {
            serve_connection(stream, service).await;
            drop(place);
        });
    }
}

/// A place for the connection's user, taken before anything is read from it.
fn take_place(limits: &Limits, stream: &UnixStream) -> Result<Place, String> {
    let uid = stream
        .peer_cred()
        .map_err(|e| format!("cannot read peer credentials: {e}"))?
        .uid();
    let unrestricted = uid == 0 || uid == nix::unistd::geteuid().as_raw();
    limits.take(uid, unrestricted).map_err(|refused| {
        tracing::warn!(uid, "connection refused: {refused}");
        refused.to_string()
    })
}

async fn refuse(mut stream: UnixStream, message: String) {
    let _ = write_error(&mut stream, ErrorCode::Internal, message).await;
}

async fn serve_connection<S: Service>(stream: UnixStream, service: Arc<S>) {
    let caller = match stream.peer_cred() {
        Ok(cred) => identify(cred.uid(), cred.gid()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read peer credentials; connection dropped");
            return;
        }
    };
    let (mut read_half, mut write_half) = stream.into_split();
    let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut read_half)).await {
        Err(_) => Err(ErrorReply::new(
            ErrorCode::BadRequest,
            format!("no complete request within {}s", REQUEST_TIMEOUT.as_secs()),
        )),
        Ok(result) => result,
    };
    let request = match outcome {
        Ok(envelope) => envelope.request,
        Err(e) => {
            let _ = write_error(&mut write_half, e.code, e.message).await;
            return;
        }
    };
    if let Err(e) = service.admit(&caller, &request).await {
        let _ = write_error(&mut write_half, e.code, e.message).await;
        return;
    }
    let files = match receive_files(&request, &read_half, &mut write_half).await {
        Ok(files) => files,
        Err(message) => {
            let _ = write_error(&mut write_half, ErrorCode::BadRequest, message).await;
            return;
        }
    };
    let (tx, mut rx) = mpsc::channel::<Reply>(16);
    let handler = tokio::spawn(async move { service.handle(caller, request, files, tx).await });
    while let Some(progress) = rx.recv().await {
        if write_reply(&mut write_half, &progress).await.is_err() {
            break; // the client left or stopped reading
        }
    }
    // Closing the channel wakes a handler blocked on a full one: it sees the client
    // gone and ends (the job it follows goes on), so the connection slot is freed.
    drop(rx);
    let _ = match handler.await {
        Ok(Ok(data)) => {
            let written = write_reply(
                &mut write_half,
                &ResultLine {
                    kind: "result",
                    data: &data,
                },
            )
            .await;
            if data.get().len() > LARGE_REPLY {
                drop(data);
                crate::memory::release_free_memory();
            }
            written
        }
        Ok(Err(e)) => write_error(&mut write_half, e.code, e.message).await,
        Err(e) => {
            let message = format!("request handler failed: {e}");
            write_error(&mut write_half, ErrorCode::Internal, message).await
        }
    };
}

/// Receives the files the request needs, one handshake each.
async fn receive_files(
    request: &Request,
    read_half: &tokio::net::unix::OwnedReadHalf,
    write_half: &mut tokio::net::unix::OwnedWriteHalf,
) -> Result<Vec<OwnedFd>, String> {
    let needed = request.files_needed();
    if needed > MAX_FILES {
        return Err(format!(
            "a request may pass at most {MAX_FILES} files, not {needed}"
        ));
    }
    let mut files = Vec::with_capacity(needed);
    for _ in 0..needed {
        files.push(receive_file(read_half, write_half).await?);
    }
    Ok(files)
}

/// Asks the client for the request's next file and receives it, within the request
/// time.
async fn receive_file(
    read_half: &tokio::net::unix::OwnedReadHalf,
    write_half: &mut tokio::net::unix::OwnedWriteHalf,
) -> Result<OwnedFd, String> {
    write_reply(write_half, &Reply::SendFile)
        .await
        .map_err(|e| format!("asking for the file: {e}"))?;
    match tokio::time::timeout(REQUEST_TIMEOUT, fdpass::receive_file(read_half.as_ref())).await {
        Ok(received) => received.map_err(|e| format!("receiving the file: {e}")),
        Err(_) => Err(format!(
            "no file received within {}s",
            REQUEST_TIMEOUT.as_secs()
        )),
    }
}

/// Reads and parses one request line, refusing anything oversized or malformed.
async fn read_request<R: tokio::io::AsyncRead + Unpin>(read: R) -> Result<Envelope, ErrorReply> {
    let mut line = Vec::new();
    let mut limited = BufReader::new(read).take(MAX_MESSAGE as u64 + 1);
    limited
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| ErrorReply::new(ErrorCode::BadRequest, format!("reading the request: {e}")))?;
    if line.len() > MAX_MESSAGE {
        return Err(ErrorReply::new(
            ErrorCode::TooLarge,
            format!("request exceeds {MAX_MESSAGE} bytes"),
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(ErrorReply::new(
            ErrorCode::BadRequest,
            "truncated request: no end of line",
        ));
    }
    parse_request(&line)
}

pub fn parse_request(line: &[u8]) -> Result<Envelope, ErrorReply> {
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
        ErrorReply::new(
            ErrorCode::BadRequest,
            format!("request is not valid JSON: {e}"),
        )
    })?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(ErrorReply::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {v} is not supported (this envsnapd speaks {PROTOCOL_VERSION})"
                ),
            ));
        }
        None => {
            return Err(ErrorReply::new(
                ErrorCode::BadRequest,
                "request has no protocol version \"v\"",
            ));
        }
    }
    serde_json::from_value(value)
        .map_err(|e| ErrorReply::new(ErrorCode::BadRequest, format!("invalid request: {e}")))
}

/// `Reply::Result` as the server writes it: the data already serialized.
#[derive(serde::Serialize)]
struct ResultLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    data: &'a serde_json::value::RawValue,
}

/// Writes the final error reply.
async fn write_error<W: tokio::io::AsyncWrite + Unpin>(
    out: &mut W,
    code: ErrorCode,
    message: String,
) -> std::io::Result<()> {
    write_reply(out, &Reply::Error(ErrorReply::new(code, message))).await
}

async fn write_reply<W: tokio::io::AsyncWrite + Unpin>(
    out: &mut W,
    reply: &impl serde::Serialize,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    match tokio::time::timeout(WRITE_TIMEOUT, out.write_all(&line)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client does not read",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hostile_requests_get_clear_errors() {
        let read =
            |bytes: Vec<u8>| async move { read_request(&bytes[..]).await.map(|_| ()).unwrap_err() };
        assert_eq!(
            read(b"{\"v\":1,\"command\":\"status\"}".to_vec())
                .await
                .code,
            ErrorCode::BadRequest,
            "no newline"
        );
        assert_eq!(
            read(b"\x00\xff garbage\n".to_vec()).await.code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            read(vec![b'a'; MAX_MESSAGE + 10]).await.code,
            ErrorCode::TooLarge
        );
        assert_eq!(
            read(b"{\"v\":9,\"command\":\"status\"}\n".to_vec())
                .await
                .code,
            ErrorCode::UnsupportedVersion
        );
        assert_eq!(
            read(b"{\"v\":1,\"command\":\"format-disk\"}\n".to_vec())
                .await
                .code,
            ErrorCode::BadRequest
        );
        assert!(
            read_request(&b"{\"v\":1,\"command\":\"status\"}\n"[..])
                .await
                .is_ok()
        );
    }

    /// A service of its own: the server frames, identifies and relays; the meaning
    /// (here: only `status` is admitted, and it reports who asked) is the service's.
    struct WhoAmI;

    impl Service for WhoAmI {
        async fn admit(&self, _caller: &Caller, request: &Request) -> Result<(), ErrorReply> {
            match request {
                Request::Status => Ok(()),
                other => Err(ErrorReply::new(
                    ErrorCode::Forbidden,
                    format!("not {}", other.name()),
                )),
            }
        }

        async fn handle(
            &self,
            caller: Caller,
            _request: Request,
            _files: Vec<OwnedFd>,
            replies: mpsc::Sender<Reply>,
        ) -> Result<Box<RawValue>, ErrorReply> {
            let progress = crate::control::protocol::Progress {
                job: 7,
                ..Default::default()
            };
            let _ = replies.send(Reply::Progress(progress)).await;
            Ok(serde_json::value::to_raw_value(&caller.uid).expect("a number"))
        }
    }

    #[tokio::test]
    async fn the_server_serves_any_service_over_a_real_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(run(listener, Arc::new(WhoAmI), shutdown.clone()));
        let client = crate::control::client::Client::new(&path);
        let mut seen = Vec::new();
        let answer = client
            .call(Request::Status, |p| seen.push(p.job))
            .await
            .unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        assert_eq!(answer.get(), uid.to_string(), "the peer's own uid");
        assert_eq!(seen, [7], "progress relayed before the result");
        let refused = client.call(Request::Reload, |_| {}).await.unwrap_err();
        assert!(
            matches!(&refused, crate::control::client::ClientError::Daemon { code: ErrorCode::Forbidden, message } if message == "not reload"),
            "{refused:?}"
        );
        shutdown.cancel();
        server.await.unwrap();
    }
}
