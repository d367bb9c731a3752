//! Targets for the control protocol: a request line as the daemon parses it, the
//! daemon's framing over a real socket, and the client reading a daemon's replies.
//!
//! Every byte a client sends is hostile (any local user may connect); replies are
//! less so, but a client must not hang or crash on a broken daemon either.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envsnap::control::client::Client;
use envsnap::control::peer::Caller;
use envsnap::control::protocol::{ErrorReply, MAX_FILES, Reply, Request};
use envsnap::control::server::{Service, parse_request, run};
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::driver::{DEFAULT_ALLOCATION, DEFAULT_TIME_LIMIT, Outcome, Target};

const WORDS: &[&[u8]] = &[
    b"{\"v\":1,\"command\":\"",
    b"\"args\":{",
    b"\"env\":\"live\"",
    b"\"backup\":\"b\"",
    b"\"parts\":[\"code\"]",
    b"\"urls\":{\"code\":\"s3://b/k\"}",
    b"\"map\":{\"a\":\"-\"}",
    b"\"keep_until\":\"2026-12-01T00:00:00Z\"",
    b"\"limit\":4294967296",
    b"\"id\":-9223372036854775808",
    b"import",
    b"backup-download",
    b"restore",
    b"job-watch",
    b"null",
    b"true",
    b"\n",
    b"\"type\":\"send-file\"",
    b"\"type\":\"result\",\"data\":",
    b"\"type\":\"progress\"",
    b"\"type\":\"error\",\"code\":\"failed\",\"message\":\"x\"",
];

pub static REQUEST: Target = Target {
    name: "protocol_request",
    run: request,
    dictionary: WORDS,
    max_len: 16 << 10,
    allocation: DEFAULT_ALLOCATION,
    time_limit: DEFAULT_TIME_LIMIT,
};

/// `control::server::parse_request`: a request that parses answers every question the
/// daemon asks of it, and parses again to itself once sent by a client.
fn request(input: &[u8]) -> Outcome {
    let envelope = parse_request(input).map_err(|e| format!("{}: {}", e.code, e.message))?;
    let request = &envelope.request;
    let _ = (request.action(), request.env(), request.files_needed());
    let name = request.name();
    assert!(!name.is_empty(), "every request has a command name");
    let again = serde_json::to_vec(&envelope).unwrap();
    assert_eq!(parse_request(&again).unwrap(), envelope);
    Ok(name)
}

pub static SOCKET: Target = Target {
    name: "protocol_socket",
    run: socket,
    dictionary: WORDS,
    max_len: 16 << 10,
    allocation: DEFAULT_ALLOCATION,
    time_limit: DEFAULT_TIME_LIMIT,
};

/// A service that admits everything and answers with what it was given.
struct Echo;

impl Service for Echo {
    async fn admit(&self, _caller: &Caller, _request: &Request) -> Result<(), ErrorReply> {
        Ok(())
    }

    async fn handle(
        &self,
        _caller: Caller,
        request: Request,
        files: Vec<OwnedFd>,
        replies: mpsc::Sender<Reply>,
    ) -> Result<Box<RawValue>, ErrorReply> {
        let _ = replies.send(Reply::Progress(Default::default())).await;
        let answer = serde_json::json!({"command": request.name(), "files": files.len()});
        Ok(serde_json::value::to_raw_value(&answer).unwrap())
    }
}

/// A current-thread runtime and a daemon's socket server on it, kept per thread.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

thread_local! {
    static FIXTURE: RefCell<Option<Fixture>> = const { RefCell::new(None) };
}

fn with_fixture<T>(serve: fn(PathBuf) -> Option<UnixListener>, f: impl FnOnce(&Fixture) -> T) -> T {
    FIXTURE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let fixture = slot.get_or_insert_with(|| {
            let dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("fuzz.sock");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let path = socket.clone();
            runtime.block_on(async {
                if let Some(listener) = serve(path) {
                    tokio::spawn(run(listener, Arc::new(Echo), CancellationToken::new()));
                }
            });
            Fixture {
                runtime,
                socket,
                _dir: dir,
            }
        });
        f(fixture)
    })
}

/// The daemon's server over a real socket: the input is what a client sends (and a
/// file each time it is asked for one, once the input holds a whole line). The server
/// answers with lines that are all replies, the last one final, and then closes.
fn socket(input: &[u8]) -> Outcome {
    let serve = |path: PathBuf| Some(UnixListener::bind(path).unwrap());
    with_fixture(serve, |fixture| {
        fixture.runtime.block_on(async {
            let exchange = talk_to_server(&fixture.socket, input);
            tokio::time::timeout(Duration::from_secs(5), exchange)
                .await
                .expect("the server answers within 5 s")
        })
    })
}

async fn talk_to_server(socket: &std::path::Path, input: &[u8]) -> Outcome {
    let stream = UnixStream::connect(socket).await.unwrap();
    let whole_line = input.contains(&b'\n');
    let (read_half, mut write_half) = stream.into_split();
    // The server may answer (and close) before taking everything: a refused write
    // is part of the exchange.
    let _ = write_half.write_all(input).await;
    if !whole_line {
        let _ = write_half.shutdown().await;
    }
    let mut reader = BufReader::new(read_half);
    let mut lines = Vec::new();
    let mut files_sent = 0;
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line).await {
            // A server that closes with bytes of ours unread makes the kernel reset
            // the connection: after its last line (checked below), not before.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && line.is_empty() => {
                break;
            }
            result => {
                result.unwrap();
            }
        }
        if line.is_empty() {
            break;
        }
        assert_eq!(
            line.last(),
            Some(&b'\n'),
            "a reply line ends with a newline"
        );
        let reply: Reply = serde_json::from_slice(&line).expect("a reply line is a reply");
        if reply == Reply::SendFile {
            files_sent += 1;
            assert!(
                files_sent <= MAX_FILES,
                "at most {MAX_FILES} files asked for"
            );
            send_null_file(reader.get_ref().as_ref().as_raw_fd());
        }
        lines.push(reply);
    }
    match lines.last() {
        Some(Reply::Result { data }) => Ok(format!("result {}", data["command"])),
        Some(Reply::Error(e)) => Err(format!("{} {}", e.code, e.message)),
        other => panic!("the last line is not final: {other:?}"),
    }
}

/// Passes `/dev/null` over the socket as the client does (one byte with SCM_RIGHTS).
fn send_null_file(socket: std::os::fd::RawFd) {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let file = std::fs::File::open("/dev/null").unwrap();
    let fds = [file.as_raw_fd()];
    let _ = sendmsg::<()>(
        socket,
        &[std::io::IoSlice::new(b"F")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    );
}

pub static CLIENT: Target = Target {
    name: "protocol_client",
    run: client,
    dictionary: WORDS,
    max_len: 16 << 10,
    allocation: DEFAULT_ALLOCATION,
    time_limit: DEFAULT_TIME_LIMIT,
};

/// `envsnapctl`'s client against a daemon that answers its request with the input
/// and closes: the call ends, with the result or an error.
fn client(input: &[u8]) -> Outcome {
    // No server: each input has a fake daemon of its own on the fixture's socket path.
    with_fixture(
        |_| None,
        |fixture| {
            fixture.runtime.block_on(async {
                let _ = std::fs::remove_file(&fixture.socket);
                let listener = UnixListener::bind(&fixture.socket).unwrap();
                let daemon = fake_daemon(listener, input.to_vec());
                let client = Client::new(&fixture.socket);
                let call = client.call(Request::Status, |_| {});
                let both = async { tokio::join!(daemon, call).1 };
                let answer = tokio::time::timeout(Duration::from_secs(5), both)
                    .await
                    .expect("the client call ends within 5 s");
                answer
                    .map(|data| format!("result of {} bytes", data.get().len().min(3)))
                    .map_err(|e| e.to_string())
            })
        },
    )
}

async fn fake_daemon(listener: UnixListener, reply: Vec<u8>) {
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut request = [0u8; 256];
    let _ = stream.read(&mut request).await;
    let _ = stream.write_all(&reply).await;
}
