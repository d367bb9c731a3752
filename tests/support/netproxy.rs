//! A TCP proxy on loopback that adds latency and injects HTTP faults between a client
//! and a server, in user space: this kernel has no netem (issue 14). The tests put it
//! between envsnapd and s3s-fs (`AWS_ENDPOINT` names the proxy's port); the benchmarks
//! run it as the `envsnap-netproxy` example (benches/netproxy.rs), so this file uses
//! std, tokio and bytes only.
//!
//! **Latency.** Each direction of a connection is a queue of chunks stamped with the
//! time they were read; a writer sends each chunk `delay` after its stamp. Reading goes
//! on while earlier chunks wait, so the delay adds latency without capping throughput
//! (up to [`QUEUE_CHUNKS`] × [`CHUNK`] bytes in flight per direction). TCP handshakes
//! are not delayed: the kernel completes them at the proxy's listener, so a new
//! connection costs one round trip less than on a real link.
//!
//! **Faults, per HTTP/1.1 request.** The proxy frames what the client sends: request
//! line, headers, and a `Content-Length` body (object_store sends every body that way).
//! Each request draws at most one fault from a seeded generator (one per connection,
//! seeded from the seed and the connection's number, so a run is repeatable as far as
//! the client opens connections in the same order):
//! - *unavailable*: answered `503 SlowDown` by the proxy, body read and not forwarded;
//! - *stall*: forwarded, and its response held back for `stall_for`;
//! - *drop*: forwarded, and the connection closed halfway through the first read of its
//!   response (in the headers of a small response, in the body of a large one).
//!
//! A permanent fault ([`NetProxy::deny`]) answers every request of one method
//! `403 AccessDenied`, until it is lifted.
//!
//! Responses are not parsed: an HTTP/1.1 client sends a request on a connection only
//! once it has read the whole previous response (hyper does not pipeline), so the
//! first bytes the server sends after request N was forwarded begin response N. A
//! request with a chunked body ends framing on its connection: the rest of that
//! connection is forwarded untouched, without faults.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Bytes read at once from either side.
pub const CHUNK: usize = 64 * 1024;
/// Chunks waiting out the delay per direction: 8 MiB, 330 MB/s at 25 ms.
pub const QUEUE_CHUNKS: usize = 128;
/// A request head longer than this is not HTTP as object_store speaks it.
const MAX_HEAD: usize = 64 * 1024;

/// What the proxy does between the two sides.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// The loopback port to listen on; 0 lets the kernel choose ([`NetProxy::port`]).
    pub listen_port: u16,
    /// The server's port on 127.0.0.1.
    pub upstream_port: u16,
    /// Added to each direction: a round trip takes twice this longer.
    pub delay: Duration,
    pub faults: Faults,
}

/// Probabilities, per request, of each fault (at most one fault a request).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub seed: u64,
    pub unavailable: f64,
    pub stall: f64,
    /// How long a stalled response is held back.
    pub stall_for: Duration,
    pub drop: f64,
}

/// How many requests the proxy saw and how many faults it injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub requests: u64,
    pub unavailable: u64,
    pub stalled: u64,
    pub dropped: u64,
    pub denied: u64,
}

/// A running proxy; stopped (listener and every connection closed) when dropped.
pub struct NetProxy {
    port: u16,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NetProxy {
    /// Listens on 127.0.0.1 and serves connections on a thread of its own.
    pub fn start(options: ProxyOptions) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, options.listen_port))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            options,
            denied_method: Mutex::new(None),
            counters: Counters::default(),
        });
        let (shutdown, stop) = oneshot::channel();
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name("netproxy".into())
            .spawn(move || runtime.block_on(accept(listener, serving, stop)))?;
        Ok(NetProxy {
            port,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn counts(&self) -> FaultCounts {
        let c = &self.shared.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        FaultCounts {
            requests: get(&c.requests),
            unavailable: get(&c.unavailable),
            stalled: get(&c.stalled),
            dropped: get(&c.dropped),
            denied: get(&c.denied),
        }
    }

    /// From now on every request with this method (`PUT`, ...) is answered `403
    /// AccessDenied`; `None` lifts it.
    pub fn deny(&self, method: Option<&str>) {
        *self.shared.denied() = method.map(str::to_ascii_uppercase);
    }
}

impl Drop for NetProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Shared {
    options: ProxyOptions,
    denied_method: Mutex<Option<String>>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    unavailable: AtomicU64,
    stalled: AtomicU64,
    dropped: AtomicU64,
    denied: AtomicU64,
}

impl Shared {
    fn denied(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A holder cannot panic halfway through replacing an Option.
        self.denied_method
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// What happens to one request, counted.
    fn decide(&self, head: &RequestHead, rng: &mut Rng) -> Action {
        let count = |counter: &AtomicU64| counter.fetch_add(1, Ordering::Relaxed);
        count(&self.counters.requests);
        if self.denied().as_deref() == Some(head.method.as_str()) {
            count(&self.counters.denied);
            return Action::Answer(error_response(head, "403 Forbidden", "AccessDenied"));
        }
        let faults = &self.options.faults;
        let roll = rng.next_unit();
        if roll < faults.unavailable {
            count(&self.counters.unavailable);
            Action::Answer(error_response(head, "503 Service Unavailable", "SlowDown"))
        } else if roll < faults.unavailable + faults.stall {
            Action::Forward(ResponseFault::Stall)
        } else if roll < faults.unavailable + faults.stall + faults.drop {
            Action::Forward(ResponseFault::Drop)
        } else {
            Action::Forward(ResponseFault::None)
        }
    }
}

enum Action {
    /// Forward the request; do this to its response.
    Forward(ResponseFault),
    /// Swallow the request and answer it with these bytes.
    Answer(Bytes),
}

#[derive(Debug, Clone, Copy)]
enum ResponseFault {
    None,
    Stall,
    Drop,
}

/// An S3 error answer; a response to HEAD has no body.
fn error_response(head: &RequestHead, status: &str, code: &str) -> Bytes {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
    );
    let body = if head.method == "HEAD" { "" } else { &body };
    Bytes::from(format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// The part of a request head the proxy acts on.
struct RequestHead {
    method: String,
    content_length: u64,
    chunked: bool,
}

impl RequestHead {
    fn parse(head: &[u8]) -> Self {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let method = lines
            .next()
            .and_then(|line| line.split(' ').next())
            .unwrap_or_default()
            .to_ascii_uppercase();
        let mut parsed = RequestHead {
            method,
            content_length: 0,
            chunked: false,
        };
        for (name, value) in lines.filter_map(|line| line.split_once(':')) {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                parsed.content_length = value.parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                parsed.chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
        parsed
    }
}

/// SplitMix64: small, seedable, and good enough to draw faults.
struct Rng(u64);

impl Rng {
    /// A number in [0, 1).
    fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

async fn accept(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = TcpListener::from_std(listener).expect("a non-blocking listener");
    let mut connections = tokio::task::JoinSet::new();
    for number in 0u64.. {
        let client = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                // Out of descriptors and the like: the client sees its connect fail.
                Err(_) => continue,
            },
        };
        let rng = Rng(shared.options.faults.seed.wrapping_add(number));
        connections.spawn(serve(client, shared.clone(), rng));
        while connections.try_join_next().is_some() {}
    }
}

/// A chunk on its way, stamped with the time it was read.
struct Stamped {
    read_at: Instant,
    segment: Segment,
}

enum Segment {
    Data(Bytes),
    /// The sending side closed: shut down the write side after what came before.
    End,
    /// A fault: close the whole connection after what came before.
    Cut,
}

type Queue = mpsc::Sender<Stamped>;

/// Queues a segment, stamped now. An error means the queue's writer is gone (its
/// socket failed), so the connection is ending anyway.
async fn send(queue: &Queue, segment: Segment) -> io::Result<()> {
    let stamped = Stamped {
        read_at: Instant::now(),
        segment,
    };
    queue
        .send(stamped)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the other side is gone"))
}

async fn serve(client: TcpStream, shared: Arc<Shared>, rng: Rng) {
    let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, shared.options.upstream_port));
    let Ok(upstream) = TcpStream::connect(upstream).await else {
        return; // the client sees its connection closed
    };
    for socket in [&client, &upstream] {
        let _ = socket.set_nodelay(true);
    }
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let (to_upstream, upstream_queue) = mpsc::channel(QUEUE_CHUNKS);
    let (to_client, client_queue) = mpsc::channel(QUEUE_CHUNKS);
    let (faults_tx, faults_rx) = mpsc::unbounded_channel();
    let delay = shared.options.delay;
    let requests = RequestPump {
        shared: &shared,
        rng,
        to_upstream,
        to_client: to_client.clone(),
        faults: faults_tx,
    };
    // The first error (a socket's, or a Cut) ends the connection: every half is
    // dropped here, which closes both sockets.
    let _ = tokio::try_join!(
        requests.run(client_read),
        pump_responses(upstream_read, to_client, faults_rx, &shared),
        write_delayed(upstream_queue, upstream_write, delay),
        write_delayed(client_queue, client_write, delay),
    );
}

/// Sends each chunk `delay` after it was read, in order.
async fn write_delayed(
    mut queue: mpsc::Receiver<Stamped>,
    mut out: OwnedWriteHalf,
    delay: Duration,
) -> io::Result<()> {
    while let Some(Stamped { read_at, segment }) = queue.recv().await {
        tokio::time::sleep_until(read_at + delay).await;
        match segment {
            Segment::Data(bytes) => out.write_all(&bytes).await?,
            Segment::End => break,
            Segment::Cut => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "fault: connection dropped mid-response",
                ));
            }
        }
    }
    // The peer may be gone already; the connection ends either way.
    let _ = out.shutdown().await;
    Ok(())
}

/// Upstream to client: responses, with the fault drawn for their request.
async fn pump_responses(
    mut upstream: OwnedReadHalf,
    to_client: Queue,
    mut faults: mpsc::UnboundedReceiver<ResponseFault>,
    shared: &Shared,
) -> io::Result<()> {
    let mut buffer = vec![0; CHUNK];
    loop {
        let read = upstream.read(&mut buffer).await?;
        if read == 0 {
            let _ = send(&to_client, Segment::End).await;
            return Ok(());
        }
        let data = Bytes::copy_from_slice(&buffer[..read]);
        // A fault waiting means these bytes begin its request's response (module doc).
        match faults.try_recv() {
            Ok(ResponseFault::Stall) => {
                shared.counters.stalled.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(shared.options.faults.stall_for).await;
            }
            Ok(ResponseFault::Drop) => {
                shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                send(&to_client, Segment::Data(data.slice(..(read / 2).max(1)))).await?;
                return send(&to_client, Segment::Cut).await;
            }
            Ok(ResponseFault::None) | Err(_) => {}
        }
        send(&to_client, Segment::Data(data)).await?;
    }
}

/// Client to upstream: frames requests and acts on each.
struct RequestPump<'a> {
    shared: &'a Shared,
    rng: Rng,
    to_upstream: Queue,
    /// For the proxy's own answers, which take the place of the server's.
    to_client: Queue,
    faults: mpsc::UnboundedSender<ResponseFault>,
}

impl RequestPump<'_> {
    async fn run(mut self, mut client: OwnedReadHalf) -> io::Result<()> {
        let mut pending = BytesMut::new();
        loop {
            match self.one_request(&mut client, &mut pending).await? {
                Framing::Next => {}
                Framing::Ended => {
                    let _ = send(&self.to_upstream, Segment::End).await;
                    return Ok(());
                }
                Framing::Lost => return self.forward_rest(&mut client, pending).await,
            }
        }
    }

    /// Reads, acts on and forwards (or answers) one request.
    async fn one_request(
        &mut self,
        client: &mut OwnedReadHalf,
        pending: &mut BytesMut,
    ) -> io::Result<Framing> {
        let head_len = loop {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if pending.len() > MAX_HEAD {
                return Ok(Framing::Lost);
            }
            if read_more(client, pending).await? == 0 {
                return Ok(Framing::Ended);
            }
        };
        let head_bytes = pending.split_to(head_len).freeze();
        let head = RequestHead::parse(&head_bytes);
        let answer = match self.shared.decide(&head, &mut self.rng) {
            Action::Forward(fault) => {
                // Queued before the request leaves: its response cannot come earlier.
                let _ = self.faults.send(fault);
                send(&self.to_upstream, Segment::Data(head_bytes)).await?;
                None
            }
            Action::Answer(response) => Some(response),
        };
        if head.chunked {
            return Ok(Framing::Lost);
        }
        let mut remaining = head.content_length;
        while remaining > 0 {
            if pending.is_empty() && read_more(client, pending).await? == 0 {
                return Ok(Framing::Ended);
            }
            let take = remaining.min(pending.len() as u64) as usize;
            let part = pending.split_to(take).freeze();
            remaining -= take as u64;
            if answer.is_none() {
                send(&self.to_upstream, Segment::Data(part)).await?;
            }
        }
        if let Some(response) = answer {
            send(&self.to_client, Segment::Data(response)).await?;
        }
        Ok(Framing::Next)
    }

    /// Forwards everything from here on, unframed and without faults.
    async fn forward_rest(self, client: &mut OwnedReadHalf, pending: BytesMut) -> io::Result<()> {
        let mut data = pending;
        loop {
            if !data.is_empty() {
                send(&self.to_upstream, Segment::Data(data.split().freeze())).await?;
            }
            if read_more(client, &mut data).await? == 0 {
                let _ = send(&self.to_upstream, Segment::End).await;
                return Ok(());
            }
        }
    }
}

/// Where framing stands after a request.
enum Framing {
    /// The next request follows.
    Next,
    /// The client closed its side.
    Ended,
    /// Not framed any more (a chunked body, an oversized head).
    Lost,
}

/// Appends one read's worth to `pending`; 0 at the end of the stream.
async fn read_more(client: &mut OwnedReadHalf, pending: &mut BytesMut) -> io::Result<usize> {
    pending.reserve(CHUNK);
    client.read_buf(pending).await
}

// The same file whether this module is loaded as tests/support's or by #[path].
#[cfg(test)]
#[path = "netproxy/tests.rs"]
mod tests;
