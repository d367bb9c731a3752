//! A TCP proxy on loopback adding latency each way, for the object-store benchmark
//! (benches/objstore.sh): the tests' proxy (tests/support/netproxy.rs), without faults.
//!
//! `envsnap-netproxy --listen-port PORT --upstream PORT --delay-ms MS`
//!
//! Prints `listening on 127.0.0.1:PORT` once it accepts connections, then serves until
//! it is killed.

use anyhow::{Context, Result, bail};

#[path = "../tests/support/netproxy.rs"]
#[allow(dead_code)] // the fault injection and counters serve the tests
mod netproxy;

fn main() -> Result<()> {
    let mut options = netproxy::ProxyOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen-port" => options.listen_port = value.parse().context("--listen-port")?,
            "--upstream" => options.upstream_port = value.parse().context("--upstream")?,
            "--delay-ms" => {
                let ms = value.parse().context("--delay-ms")?;
                options.delay = std::time::Duration::from_millis(ms);
            }
            _ => bail!(
                "unknown option {flag}; usage: envsnap-netproxy --listen-port PORT \
                 --upstream PORT --delay-ms MS"
            ),
        }
    }
    if options.upstream_port == 0 {
        bail!("--upstream PORT is required");
    }
    let proxy = netproxy::NetProxy::start(options).context("starting the proxy")?;
    println!("listening on 127.0.0.1:{}", proxy.port());
    loop {
        std::thread::park();
    }
}
