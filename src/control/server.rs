//! The control socket server.
//!
//! Each connection carries one request. The client is identified by the socket's
//! peer credentials (SO_PEERCRED), never by anything it says; its user and groups are
//! checked against the `[access]` rules for the request's action and environment
//! (root may do everything). Every byte from the socket is hostile: the request line
//! must arrive within [`REQUEST_TIMEOUT`] and fit in [`MAX_MESSAGE`]; garbage gets an
//! error reply, never a crash. Connections are served concurrently, at most
//! [`MAX_CONNECTIONS`] at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};

use super::fdpass;
use super::protocol::{
    Envelope, ErrorCode, ErrorReply, MAX_FILES, MAX_MESSAGE, PROTOCOL_VERSION, Reply, Request,
};
use crate::api::{self, ApiError, Caller};
use crate::daemon::Daemon;

/// A client must send its request within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A reply line must be taken by the client within this time, or the connection drops.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_CONNECTIONS: usize = 64;
/// After a reply this large, freed memory is handed back to the system.
const LARGE_REPLY: usize = 1 << 20;

pub async fn run(listener: UnixListener, daemon: Arc<Daemon>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = daemon.shutdown.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse_busy(stream));
            continue;
        };
        let daemon = daemon.clone();
        tokio::spawn(async move {
            serve_connection(stream, &daemon).await;
            drop(permit);
        });
    }
}

async fn refuse_busy(mut stream: UnixStream) {
    let _ = write_error(
        &mut stream,
        ErrorCode::Internal,
        "envsnapd is serving too many clients; try again".into(),
    )
    .await;
}

async fn serve_connection(stream: UnixStream, daemon: &Arc<Daemon>) {
    let caller = match stream.peer_cred() {
        Ok(cred) => identify(cred.uid(), cred.gid()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read peer credentials; connection dropped");
            return;
        }
    };
    let (mut read_half, mut write_half) = stream.into_split();
    let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut read_half)).await {
        Err(_) => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("no complete request within {}s", REQUEST_TIMEOUT.as_secs()),
        )),
        Ok(result) => result,
    };
    let envelope = match outcome {
        Ok(envelope) => envelope,
        Err(e) => {
            let _ = write_error(&mut write_half, e.code, e.message).await;
            return;
        }
    };
    let request = envelope.request;
    let action = request.action();
    let env = match &request {
        // A job belongs to its environment: its rules decide who may see or cancel it.
        Request::JobShow { id } | Request::JobWatch { id } | Request::JobCancel { id } => {
            let id = *id;
            daemon
                .catalog
                .blocking(move |c| c.get_job(id))
                .await
                .ok()
                .flatten()
                .and_then(|job| job.env)
        }
        other => other.env().map(str::to_owned),
    };
    let source_denied = restore_source_denied(daemon, &caller, &request);
    if let Some(message) = source_denied {
        tracing::warn!(user = %caller.user, uid = caller.uid, "denied: {message}");
        let _ = write_error(&mut write_half, ErrorCode::Forbidden, message).await;
        return;
    }
    if !allowed(daemon, &caller, action, env.as_deref()) {
        let target = env.map_or_else(String::new, |e| format!(" on environment {e}"));
        let message = format!("user {} may not {action}{target}", caller.user);
        tracing::warn!(user = %caller.user, uid = caller.uid, "denied: {message}");
        let _ = write_error(&mut write_half, ErrorCode::Forbidden, message).await;
        return;
    }
    // The command and environment only: arguments may carry credentials (a signed URL).
    tracing::debug!(user = %caller.user, command = request.name(), env = request.env(), "request");
    // A request its files cannot save is refused before they are asked for.
    if let Request::Import {
        env,
        parts,
        urls,
        version,
        ..
    } = &request
        && let Err(e) = api::check_import(daemon, env, parts, urls, version.as_deref())
    {
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
    let handler = {
        let (daemon, caller) = (daemon.clone(), caller.clone());
        tokio::spawn(async move { api::handle(&daemon, request, &caller, &tx, files).await })
    };
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
) -> Result<Vec<std::os::fd::OwnedFd>, String> {
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
) -> Result<std::os::fd::OwnedFd, String> {
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
async fn read_request<R: tokio::io::AsyncRead + Unpin>(read: R) -> Result<Envelope, ApiError> {
    let mut line = Vec::new();
    let mut limited = BufReader::new(read).take(MAX_MESSAGE as u64 + 1);
    limited
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("reading the request: {e}")))?;
    if line.len() > MAX_MESSAGE {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("request exceeds {MAX_MESSAGE} bytes"),
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "truncated request: no end of line",
        ));
    }
    parse_request(&line)
}

pub fn parse_request(line: &[u8]) -> Result<Envelope, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("request is not valid JSON: {e}"),
        )
    })?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {v} is not supported (this envsnapd speaks {PROTOCOL_VERSION})"
                ),
            ));
        }
        None => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "request has no protocol version \"v\"",
            ));
        }
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("invalid request: {e}")))
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
    write_reply(out, &Reply::Error(ErrorReply { code, message })).await
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

/// The caller's user and group names, from its uid and primary gid.
pub fn identify(uid: u32, gid: u32) -> Caller {
    let user = nix::unistd::User::from_uid(uid.into()).ok().flatten();
    let name = user
        .as_ref()
        .map_or_else(|| format!("uid:{uid}"), |u| u.name.clone());
    let mut groups = Vec::new();
    if let Some(user) = &user
        && let Ok(cname) = std::ffi::CString::new(user.name.clone())
        && let Ok(gids) = nix::unistd::getgrouplist(&cname, nix::unistd::Gid::from_raw(gid))
    {
        for gid in gids {
            if let Ok(Some(group)) = nix::unistd::Group::from_gid(gid) {
                groups.push(group.name);
            }
        }
    }
    Caller {
        uid,
        user: name,
        groups,
    }
}

/// Restoring another environment's backup reads its data: the caller needs the
/// `download` right there; another host's backups need the global `restore` right.
fn restore_source_denied(daemon: &Daemon, caller: &Caller, request: &Request) -> Option<String> {
    let Request::Restore {
        env,
        from: Some(from),
        ..
    } = request
    else {
        return None;
    };
    if caller.is_unrestricted() {
        return None;
    }
    let config = daemon.config();
    let may = |action, env: Option<&str>| {
        config
            .access_for(env)
            .allows(action, &caller.user, &caller.groups)
    };
    match from.split_once('/') {
        Some(_) if !may(super::protocol::Action::Restore, None) => Some(format!(
            "user {} may not restore backups of other hosts ({from})",
            caller.user
        )),
        None if from != env && !may(super::protocol::Action::Download, Some(from)) => {
            Some(format!(
                "user {} may not download on environment {from}, so may not restore its backups",
                caller.user
            ))
        }
        _ => None,
    }
}

fn allowed(
    daemon: &Daemon,
    caller: &Caller,
    action: super::protocol::Action,
    env: Option<&str>,
) -> bool {
    caller.is_unrestricted()
        || daemon
            .config()
            .access_for(env)
            .allows(action, &caller.user, &caller.groups)
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
}
