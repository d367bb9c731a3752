//! The engine on a real S3-compatible server on loopback (s3s-fs, which checks
//! request signatures): the same round trip as on a local directory, through
//! `Store::from_url("s3://...")` and the AWS_* settings operators use.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{HOST, assert_same_tree, backup_dir, pseudo_random, small_options};
use envsnap::catalog::Catalog;
use envsnap::repo::Repository;
use envsnap::repo::crypto::Keys;
use envsnap::store::Store;

const ACCESS_KEY: &str = "envsnap-test";
const SECRET_KEY: &str = "envsnap-test-secret";

fn s3s_fs() -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("s3s-fs"));
    let cargo_home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/s3s-fs"));
    from_path.chain(cargo_home).find(|p| p.is_file())
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(binary: &PathBuf, root: &std::path::Path) -> (Server, u16) {
    std::fs::create_dir_all(root.join("backups")).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s3s-fs did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Server(child), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_round_trips_through_a_real_s3_server() {
    let Some(binary) = s3s_fs() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs s3s-fs (cargo install s3s-fs)"
        );
        eprintln!("skipped: s3s-fs is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_server, port) = start_server(&binary, &dir.path().join("s3"));
    // The settings an operator gives the daemon's environment. Set once, in the only
    // test of this binary, before any thread reads the environment.
    unsafe {
        std::env::set_var("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"));
        std::env::set_var("AWS_ALLOW_HTTP", "true");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        std::env::set_var("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false");
    }
    let root = Store::from_url("s3://backups/fleet").unwrap();
    let keys = Keys::from_secret(b"0123456789abcdef0123456789abcdef-s3");
    Repository::init(&root, HOST, &keys, small_options())
        .await
        .unwrap();
    let repo = Repository::open(&root, HOST, keys.clone(), Catalog::in_memory().unwrap())
        .await
        .unwrap();

    let source = dir.path().join("source");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    std::fs::write(source.join("big.bin"), pseudo_random(2_500_000, 7)).unwrap();
    std::fs::write(source.join("sub/small.txt"), b"hello s3").unwrap();
    let manifest = backup_dir(&repo, "live", "s3-first", &source, None).await;
    assert!(
        dir.path().join("s3/backups/fleet").is_dir(),
        "objects live under the bucket's prefix"
    );

    // A fresh open finds it all through S3 alone.
    let fresh = Repository::open(&root, HOST, keys.clone(), Catalog::in_memory().unwrap())
        .await
        .unwrap();
    fresh.rebuild_index().await.unwrap();
    let target = dir.path().join("restored");
    fresh
        .restore_tree(&manifest, "files:data", &target)
        .await
        .unwrap();
    assert_same_tree(&source, &target);
    let report = fresh
        .verify(&fresh.list_manifests(None).await.unwrap(), true)
        .await
        .unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);

    // A wrong secret is refused by the server, and said so clearly.
    unsafe { std::env::set_var("AWS_SECRET_ACCESS_KEY", "not-the-secret") };
    let wrong = Store::from_url("s3://backups/fleet").unwrap();
    let error = Repository::open(&wrong, HOST, keys, Catalog::in_memory().unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("config"), "{error}");
}
