//! A real S3-compatible server on loopback for tests: s3s-fs (which checks request
//! signatures), installed by .ci/run with `cargo install s3s-fs`.
//!
//! The engine and the daemon find the server through the process's `AWS_*` settings,
//! as operators configure them, and all the tests share one process. So one server
//! runs at a time: [`start_server`] waits until the previous [`Server`] is dropped,
//! and the test holding the server is the only one that points the settings at it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::ports::{free_loopback_port, wait_until_listening};

pub const ACCESS_KEY: &str = "envsnap-test";
pub const SECRET_KEY: &str = "envsnap-test-secret";

/// The s3s-fs binary; None (with a note) where it is not installed, which CI (`CI`
/// set) does not accept.
pub fn s3s_fs() -> Option<PathBuf> {
    let found = find_s3s_fs();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs s3s-fs (cargo install s3s-fs)"
        );
        eprintln!("skipped: s3s-fs is not installed");
    }
    found
}

fn find_s3s_fs() -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("s3s-fs"));
    let cargo_home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/s3s-fs"));
    from_path.chain(cargo_home).find(|p| p.is_file())
}

/// Held by the running [`Server`] (or moto's, see [`super::moto`]): the process's
/// `AWS_*` settings are its.
pub(super) static AWS_SETTINGS: Mutex<()> = Mutex::new(());

/// A running S3 server (s3s-fs here, moto in [`super::moto`]); stopped when dropped,
/// which lets the next test start one.
pub struct Server {
    child: Child,
    // Released after `drop` has stopped the server.
    _settings: MutexGuard<'static, ()>,
}

impl Server {
    /// Owns the server process (before waiting for it: a server that does not come
    /// up is stopped too) and the `AWS_*` settings while it runs.
    pub(super) fn holding(child: Child, settings: MutexGuard<'static, ()>) -> Server {
        Server {
            child,
            _settings: settings,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts s3s-fs on `root` (with a `backups` bucket), once no other test's server runs.
pub fn start_server(binary: &PathBuf, root: &std::path::Path) -> (Server, u16) {
    // Poisoned by a test that panicked holding its server, which was stopped all the same.
    let settings = AWS_SETTINGS.lock().unwrap_or_else(PoisonError::into_inner);
    std::fs::create_dir_all(root.join("backups")).unwrap();
    let port = free_loopback_port();
    let child = Command::new(binary)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            ACCESS_KEY,
            "--secret-key",
            SECRET_KEY,
        ])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server::holding(child, settings);
    wait_until_listening(port, "s3s-fs");
    (server, port)
}

/// Sets the AWS_* settings an operator gives the daemon, for the server on `port`
/// (the daemon a test starts inherits them).
///
/// # Safety
/// Changes the process environment while other tests run: call it only while
/// holding the [`Server`] on `port` (so no other test writes these variables), and
/// only where the other threads read the environment through std, which serializes
/// its reads with `set_var`.
pub unsafe fn point_aws_settings_at(port: u16) {
    unsafe {
        std::env::set_var("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"));
        std::env::set_var("AWS_ALLOW_HTTP", "true");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        std::env::set_var("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false");
    }
}
