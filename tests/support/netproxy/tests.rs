//! The proxy between a plain HTTP/1.1 client and server: latency added without a
//! throughput cap, each fault drawn per request and counted, a denied method refused
//! until lifted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Faults, NetProxy, ProxyOptions};

/// An HTTP/1.1 server on loopback that answers every request `200` with `body_len`
/// bytes, on keep-alive connections, and counts the requests it read.
fn start_server(body_len: usize) -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicU64::new(0));
    let counted = requests.clone();
    // Lives as long as the test process: a test's connections end with the test.
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counted = counted.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                while read_message(&mut reader, true).is_some() {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\n\r\n");
                    if out.write_all(head.as_bytes()).is_err()
                        || out.write_all(&vec![b'x'; body_len]).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (port, requests)
}

/// Reads one HTTP/1.1 message (request or response): its first line and, unless
/// `with_body` is false, its `Content-Length` body. None if the stream ended first.
fn read_message(reader: &mut BufReader<TcpStream>, with_body: bool) -> Option<(String, usize)> {
    let mut first = String::new();
    reader.read_line(&mut first).ok().filter(|&n| n > 0)?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok().filter(|&n| n > 0)?;
        if line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
    }
    if with_body {
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
    }
    Some((first, length))
}

fn connect(port: u16) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(("127.0.0.1", port)).unwrap())
}

/// Sends a request with `body`; the response's status and body length, or None when
/// the connection closed before the response was whole.
fn exchange(client: &mut BufReader<TcpStream>, method: &str, body: &[u8]) -> Option<(u16, usize)> {
    let head = format!(
        "{method} /bucket/key HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    client.get_mut().write_all(head.as_bytes()).ok()?;
    client.get_mut().write_all(body).ok()?;
    let (status_line, length) = read_message(client, method != "HEAD")?;
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    Some((status, length))
}

#[test]
fn latency_is_added_each_way_without_capping_throughput() {
    let body_len = 16 << 20;
    let (port, _) = start_server(body_len);
    let proxy = NetProxy::start(ProxyOptions {
        upstream_port: port,
        delay: Duration::from_millis(50),
        ..Default::default()
    })
    .unwrap();
    let mut client = connect(proxy.port());
    for _ in 0..2 {
        let started = Instant::now();
        assert_eq!(exchange(&mut client, "GET", b""), Some((200, body_len)));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(100),
            "a round trip gains 2 × 50 ms: {took:?}"
        );
        // 256 chunks of 64 KiB, each waiting out the delay in turn, would take 12.8 s.
        assert!(
            took < Duration::from_secs(3),
            "throughput is not capped: {took:?}"
        );
    }
}

#[test]
fn faults_are_drawn_per_request_and_counted() {
    let (port, served) = start_server(100);
    let stall_for = Duration::from_millis(150);
    let proxy = NetProxy::start(ProxyOptions {
        upstream_port: port,
        faults: Faults {
            seed: 7,
            unavailable: 0.2,
            stall: 0.2,
            stall_for,
            drop: 0.2,
        },
        ..Default::default()
    })
    .unwrap();
    let (mut unavailable, mut cut, mut slow) = (0, 0, 0);
    let mut client = connect(proxy.port());
    for _ in 0..100 {
        let started = Instant::now();
        match exchange(&mut client, "PUT", b"some payload") {
            Some((200, 100)) if started.elapsed() >= stall_for => slow += 1,
            Some((200, 100)) => {}
            // Keep-alive holds after the proxy's own answer: the body was read.
            Some((503, _)) => unavailable += 1,
            None => {
                cut += 1;
                client = connect(proxy.port());
            }
            other => panic!("unexpected response {other:?}"),
        }
    }
    let counts = proxy.counts();
    assert_eq!(counts.requests, 100);
    assert_eq!(counts.unavailable, unavailable);
    assert_eq!(counts.dropped, cut);
    // A slow machine may make an unstalled response slow too, never the reverse.
    assert!(slow >= counts.stalled, "{counts:?}, {slow} slow");
    assert!(
        counts.unavailable >= 5 && counts.dropped >= 5 && counts.stalled >= 5,
        "each fault happens about 20 times in 100: {counts:?}"
    );
    assert_eq!(
        served.load(Ordering::SeqCst),
        100 - unavailable,
        "a 503 from the proxy never reaches the server"
    );
}

#[test]
fn a_denied_method_is_refused_until_lifted() {
    let (port, served) = start_server(10);
    let proxy = NetProxy::start(ProxyOptions {
        upstream_port: port,
        ..Default::default()
    })
    .unwrap();
    let mut client = connect(proxy.port());
    proxy.deny(Some("put"));
    let denied = exchange(&mut client, "PUT", b"data");
    assert!(matches!(denied, Some((403, len)) if len > 0), "{denied:?}");
    assert_eq!(exchange(&mut client, "GET", b""), Some((200, 10)));
    // The answer to HEAD has no body: the next response on the connection is whole.
    proxy.deny(Some("HEAD"));
    assert_eq!(exchange(&mut client, "HEAD", b""), Some((403, 0)));
    assert_eq!(exchange(&mut client, "PUT", b"data"), Some((200, 10)));
    proxy.deny(None);
    assert_eq!(exchange(&mut client, "GET", b""), Some((200, 10)));
    assert_eq!(proxy.counts().denied, 2);
    assert_eq!(served.load(Ordering::SeqCst), 3);
}
