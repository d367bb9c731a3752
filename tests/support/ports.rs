//! Free loopback ports for servers the tests start (and for a port nobody listens on),
//! and the wait until such a server listens.
//!
//! A port is found by binding port 0 and letting the listener go, so the kernel may
//! give the same port to the next bind soon after. All the tests run in one process,
//! at the same time: without the record below, two of them could be handed one port
//! and start two servers on it. A port is handed out at most once per run.

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port free right now and not handed out before in this process.
pub fn free_loopback_port() -> u16 {
    // A test that panicked while holding the lock left the set intact.
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// Waits (up to 20 s) until a server answers on loopback `port`; `what` names it in
/// the failure.
pub fn wait_until_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}
