//! End to end: the Prometheus endpoint of a real envsnapd, scraped over loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use crate::support::daemon::{TestDaemon, make_environments, standard_config, start_failing};
use crate::support::ports::free_loopback_port;

/// A loopback address with a port free right now.
pub(super) fn free_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_loopback_port()))
}

/// The standard config with `daemon.metrics_listen` set.
fn config_with_metrics(dir: &std::path::Path, address: SocketAddr) -> String {
    standard_config(dir, "").replacen(
        "[daemon]\n",
        &format!("[daemon]\nmetrics_listen = \"{address}\"\n"),
        1,
    )
}

/// `GET path` over plain HTTP/1.1; the status line and the body.
pub(super) fn get(address: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

#[test]
fn metrics_tell_backups_and_job_outcomes() {
    let address = free_address();
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    let daemon = TestDaemon::start_in(dir, |d| config_with_metrics(d, address));

    let job = daemon.json(&["backup", "create", "live", "--name", "b1", "--wait"]);
    assert_eq!(job["job"]["state"], "succeeded", "{job}");
    let size: u64 = job["backup"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["size"].as_u64().unwrap())
        .sum();
    let failed = daemon.ctl(&["backup", "create", "live", "--name", "b1", "--wait"]);
    assert_ne!(
        failed.status, 0,
        "a taken name is refused, but queues nothing"
    );

    let (status, body) = get(address, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    for line in [
        "envsnap_backups{env=\"live\"} 1".to_owned(),
        "envsnap_backups{env=\"test\"} 0".to_owned(),
        "envsnap_environment_status{env=\"live\",status=\"ready\"} 1".to_owned(),
        format!("envsnap_backup_last_size_bytes{{env=\"live\"}} {size}"),
        "envsnap_jobs_finished_total{kind=\"backup\",state=\"succeeded\"} 1".to_owned(),
        "envsnap_jobs{state=\"running\"} 0".to_owned(),
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in:\n{body}"
        );
    }
    let completed =
        chrono::DateTime::parse_from_rfc3339(job["backup"]["completed"].as_str().unwrap())
            .unwrap()
            .timestamp();
    let reported = body
        .lines()
        .find_map(|l| {
            l.strip_prefix("envsnap_backup_last_success_timestamp_seconds{env=\"live\"} ")
        })
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no last success time in:\n{body}"));
    assert_eq!(reported as i64, completed);

    let (status, _) = get(address, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

#[test]
fn a_taken_metrics_port_stops_the_daemon_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    make_environments(dir.path());
    let config = dir.path().join("envsnap.toml");
    std::fs::write(&config, config_with_metrics(dir.path(), address)).unwrap();
    let stderr = start_failing(&config);
    assert_eq!(
        stderr,
        format!(
            "envsnapd: metrics listener {address} (daemon.metrics_listen): Address already in use (os error 98)"
        )
    );
}
