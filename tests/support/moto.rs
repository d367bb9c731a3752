//! moto's standalone S3 server on loopback: the S3 implementation the tests can run
//! that has Object Lock and versioning (s3s-fs, in [`super::s3`], has neither). PyPI
//! `moto[server]`, installed by .ci/run.
//!
//! The engine finds it through the process's `AWS_*` settings, which
//! [`super::s3::point_aws_settings_at`] points at either server; so the two share one
//! lock ([`super::s3::AWS_SETTINGS`]) and one server of either kind runs at a time.
//! [`start_server`] waits until the previous one is dropped.
//!
//! moto 5.2.1 as the tests find it (see `tests/engine/s3_lock.rs`):
//! - By default it checks no signature (any credentials pass) but refuses anonymous
//!   reads, so the raw requests here carry a dummy `Authorization` header. Creating a
//!   bucket needs none. [`start_server_checking_signatures`] turns the checks on.
//! - A put with a retention date needs a `Content-MD5` header (400
//!   `MissingUploadObjectWithObjectLockHeaders` without) but the digest is not
//!   checked.
//! - Deleting a locked version is refused with 403 `AccessDenied`; governance gives
//!   way to `x-amz-bypass-governance-retention: true`, compliance does not.
//! - `GET ?object-lock` on a bucket without Object Lock: 404
//!   `ObjectLockConfigurationNotFoundError`, as S3.
//! - `GET ?retention` is not implemented: moto answers with the object itself (the
//!   lock is in its `x-amz-object-lock-*` headers, as in a HEAD's).
//! - `PUT ?retention` shortens a lock without complaint, compliance mode included
//!   (S3 refuses).
//! - Listings page by `MOTO_S3_DEFAULT_MAX_KEYS` (1000 by default) when the request
//!   names no `max-keys`: [`start_server_paging`] makes pages small.
//!
//! Start-up (until it listens) takes 0.92-0.98 s on the 2-core test machine, Python
//! importing moto: one server per test, not one per check.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::PoisonError;

use super::http::{self, Response};
use super::ports::{free_loopback_port, wait_until_listening};
use super::s3::AWS_SETTINGS;

/// Sent on the raw requests: moto refuses anonymous reads but checks no signature.
const DUMMY_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 \
    Credential=envsnap-test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, \
    Signature=0000";

/// The moto_server program; None (with a note) where it is not installed, which CI
/// (`CI` set) does not accept.
pub fn moto_server() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let pyenv_root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".pyenv")));
    let from_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>());
    let found = from_path
        .chain(pyenv_root.map(|root| root.join("shims")))
        .chain(home.map(|h| h.join(".local/bin")))
        .map(|dir| dir.join("moto_server"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs moto's server (pip install 'moto[server]')"
        );
        eprintln!("skipped: moto_server is not installed");
    }
    found
}

pub use super::s3::Server;

/// Starts moto on a free loopback port, once no other test's S3 server runs.
pub fn start_server(binary: &Path) -> (Server, u16) {
    start(binary, &[])
}

/// Like [`start_server`], with listings cut into pages of `max_keys` entries
/// (where a request does not say how many it wants).
pub fn start_server_paging(binary: &Path, max_keys: u32) -> (Server, u16) {
    start(
        binary,
        &[("MOTO_S3_DEFAULT_MAX_KEYS", &max_keys.to_string())],
    )
}

/// Starts moto with `settings` in its environment.
fn start(binary: &Path, settings_env: &[(&str, &str)]) -> (Server, u16) {
    // Poisoned by a test that panicked holding its server, which was stopped all the same.
    let settings = AWS_SETTINGS.lock().unwrap_or_else(PoisonError::into_inner);
    let port = free_loopback_port();
    let mut command = Command::new(binary);
    command
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command.envs(settings_env.iter().copied());
    let server = Server::holding(command.spawn().unwrap(), settings);
    wait_until_listening(port, "moto_server");
    (server, port)
}

/// A moto server that checks signatures, and the keys it accepts.
pub struct CheckingServer {
    /// Stopped when the whole is dropped.
    _server: Server,
    pub port: u16,
    pub access_key: String,
    pub secret_key: String,
}

/// Like [`start_server`], with a bucket `bucket` (Object Lock on) and a user allowed
/// everything, after which moto checks every request's signature and key (its IAM
/// authentication, off for the first `INITIAL_NO_AUTH_ACTION_COUNT` requests, the
/// four that set this up). moto recomputes the signature with botocore's SigV4: an
/// implementation independent of the one object_store signs with. (It refuses keys
/// with `+`, `=`, `&` or `,` even from botocore; S3 takes them.)
pub fn start_server_checking_signatures(binary: &Path, bucket: &str) -> CheckingServer {
    let (server, port) = start(binary, &[("INITIAL_NO_AUTH_ACTION_COUNT", "4")]);
    create_bucket(port, bucket, true);
    iam(port, &[("Action", "CreateUser"), ("UserName", "envsnap")]);
    let keys = iam(
        port,
        &[("Action", "CreateAccessKey"), ("UserName", "envsnap")],
    );
    let policy =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    iam(
        port,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "envsnap"),
            ("PolicyName", "everything"),
            ("PolicyDocument", policy),
        ],
    );
    let element = |name: &str| {
        let (_, rest) = keys.split_once(&format!("<{name}>")).unwrap();
        rest.split_once('<').unwrap().0.to_owned()
    };
    CheckingServer {
        _server: server,
        port,
        access_key: element("AccessKeyId"),
        secret_key: element("SecretAccessKey"),
    }
}

/// An IAM action (form-encoded POST, as the AWS SDKs send them); its answer's text.
fn iam(port: u16, parameters: &[(&str, &str)]) -> String {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(parameters)
        .append_pair("Version", "2010-05-08")
        .finish();
    let headers = [
        (
            "Authorization",
            DUMMY_AUTHORIZATION.replace("/s3/", "/iam/"),
        ),
        (
            "Content-Type",
            "application/x-www-form-urlencoded".to_owned(),
        ),
    ];
    let answer = http::request("POST", &url(port, "", ""), &headers, body.as_bytes());
    assert_eq!(answer.status, 200, "{parameters:?}: {}", answer.text());
    answer.text()
}

/// Creates bucket `name`, with Object Lock (and so versioning) if `object_lock`.
pub fn create_bucket(port: u16, name: &str, object_lock: bool) {
    let mut headers = vec![];
    if object_lock {
        headers.push(("x-amz-bucket-object-lock-enabled", "true".to_owned()));
    }
    let answer = http::request("PUT", &url(port, name, ""), &headers, b"");
    assert_eq!(
        answer.status,
        200,
        "create bucket {name}: {}",
        answer.text()
    );
}

/// DELETE one version of `key`, bypassing governance retention if `bypass`.
pub fn delete_version(
    port: u16,
    bucket: &str,
    key: &str,
    version_id: &str,
    bypass: bool,
) -> Response {
    let mut headers = vec![("Authorization", DUMMY_AUTHORIZATION.to_owned())];
    if bypass {
        headers.push(("x-amz-bypass-governance-retention", "true".to_owned()));
    }
    let target = url(
        port,
        &format!("{bucket}/{key}"),
        &format!("versionId={version_id}"),
    );
    http::request("DELETE", &target, &headers, b"")
}

fn url(port: u16, path: &str, query: &str) -> String {
    match query {
        "" => format!("http://127.0.0.1:{port}/{path}"),
        query => format!("http://127.0.0.1:{port}/{path}?{query}"),
    }
}
