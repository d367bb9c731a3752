//! The Azure Blob Storage API on loopback for tests: Azurite, Microsoft's
//! storage emulator (npm package `azurite`, installed by .ci/run), which checks
//! Shared Key signatures and SAS tokens as Azure does.
//!
//! The daemon finds the emulator through the `AZURE_*` settings (and
//! `AZURITE_BLOB_STORAGE_URL`) operators give it, read from the process environment
//! that all the tests share. So, as with [`super::s3`], one emulator runs at a time:
//! [`start`] waits until the previous [`Azurite`] is dropped, and the test holding it
//! is the only one that points the settings at it.
//!
//! `object_store` cannot create containers, and a test must see the store from outside
//! the code under test; [`Azurite::request`] signs its own requests (Shared Key: an
//! HMAC-SHA256 of the request's canonical form, keyed with the account key), so the
//! fixture creates containers, lists, reads and overwrites blobs without `object_store`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::http::{self, Response};
use super::ports::{free_loopback_port, wait_until_listening};

/// Azurite's one account and its key: the well-known development credentials every
/// Azure SDK has built in (published in Azurite's README). Not a secret; do not modify.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The REST API version the fixture's requests name (Azurite runs with
/// `--skipApiVersionCheck`, so a newer emulator accepts it too).
const API_VERSION: &str = "2021-08-06";

/// The azurite-blob binary; None (with a note) where it is not installed, which CI
/// (`CI` set) does not accept.
pub fn azurite_blob() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("azurite-blob"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs azurite (npm install -g azurite)"
        );
        eprintln!("skipped: azurite-blob is not installed");
    }
    found
}

/// Held by the running [`Azurite`]: the process's `AZURE_*` settings are its.
static AZURE_SETTINGS: Mutex<()> = Mutex::new(());

/// A running Azurite blob service; stopped when dropped, which lets the next test
/// start one.
pub struct Azurite {
    pub port: u16,
    child: Child,
    // Released after `drop` has stopped the emulator.
    _settings: MutexGuard<'static, ()>,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Azurite's blob service with its data in `location`, once no other test's
/// emulator runs.
pub fn start(binary: &Path, location: &Path) -> Azurite {
    // Poisoned by a test that panicked holding its emulator, which was stopped all the same.
    let settings = AZURE_SETTINGS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    std::fs::create_dir_all(location).unwrap();
    let port = free_loopback_port();
    let child = Command::new(binary)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .arg("--location")
        .arg(location)
        // No access log; no telemetry sent anywhere; no debug log (that needs --debug).
        .args(["--silent", "--disableTelemetry", "--skipApiVersionCheck"])
        // The account is the URL's first path segment, never taken from the host name.
        .arg("--disableProductStyleUrl")
        .current_dir(location)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Owned before the wait, so that an emulator that does not come up is stopped.
    let azurite = Azurite {
        port,
        child,
        _settings: settings,
    };
    wait_until_listening(port, "azurite-blob");
    azurite
}

/// A blob as the emulator lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub name: String,
    pub size: u64,
}

impl Azurite {
    /// The blob service's base URL, as `AZURITE_BLOB_STORAGE_URL` gives it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sets the settings an operator gives the daemon for the emulator (the daemon a
    /// test starts inherits them). `object_store` in emulator mode uses plain HTTP, the
    /// well-known account and path-style URLs; account and key are given all the same,
    /// as the Azure documentation tells operators to.
    ///
    /// # Safety
    /// Changes the process environment while other tests run: call it only while
    /// holding this [`Azurite`] (so no other test writes these variables), and only
    /// where the other threads read the environment through std, which serializes
    /// its reads with `set_var`.
    pub unsafe fn point_azure_settings_here(&self) {
        unsafe {
            std::env::set_var("AZURE_STORAGE_USE_EMULATOR", "true");
            std::env::set_var("AZURITE_BLOB_STORAGE_URL", self.url());
            std::env::set_var("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT);
            std::env::set_var("AZURE_STORAGE_ACCOUNT_KEY", ACCOUNT_KEY);
        }
    }

    /// Creates a private container (which `object_store` cannot do).
    pub fn create_container(&self, container: &str) {
        let created = self.request("PUT", container, &[("restype", "container")], &[], b"");
        assert_eq!(created.status, 201, "{}", created.text());
    }

    /// The blobs in `container` whose names start with `prefix`, in name order.
    pub fn list_blobs(&self, container: &str, prefix: &str) -> Vec<Blob> {
        let query = [
            ("restype", "container"),
            ("comp", "list"),
            ("prefix", prefix),
        ];
        let listed = self.request("GET", container, &query, &[], b"");
        assert_eq!(listed.status, 200, "{}", listed.text());
        let xml = listed.text();
        // One page holds up to 5000 blobs, more than any test makes.
        assert!(!xml.contains("<NextMarker>"), "a second page: {xml}");
        xml.split("<Blob>")
            .skip(1)
            .map(|blob| Blob {
                name: element(blob, "Name").to_owned(),
                size: element(blob, "Content-Length").parse().unwrap(),
            })
            .collect()
    }

    /// Blob `name`'s bytes.
    pub fn get_blob(&self, container: &str, name: &str) -> Vec<u8> {
        let got = self.request("GET", &format!("{container}/{name}"), &[], &[], b"");
        assert_eq!(got.status, 200, "{}", got.text());
        got.body
    }

    /// Replaces blob `name` with `bytes`, as someone with the account key could.
    pub fn put_blob(&self, container: &str, name: &str, bytes: &[u8]) {
        let headers = [("x-ms-blob-type", "BlockBlob".to_owned())];
        let put = self.request("PUT", &format!("{container}/{name}"), &[], &headers, bytes);
        assert_eq!(put.status, 201, "{}", put.text());
    }

    /// Sends a request for `resource` (`container` or `container/blob`) signed with the
    /// account key. `query` values are plain (no escaping needed in tests);
    /// `headers` may add `x-ms-*` headers, which the signature covers.
    pub fn request(
        &self,
        method: &str,
        resource: &str,
        query: &[(&str, &str)],
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Response {
        let path = format!("/{ACCOUNT}/{resource}");
        let mut headers = headers.to_vec();
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT");
        headers.push(("x-ms-date", date.to_string()));
        headers.push(("x-ms-version", API_VERSION.to_owned()));
        let authorization = shared_key(method, &path, query, &headers, body.len());
        headers.push(("Authorization", authorization));
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let url = format!("{}{path}?{}", self.url(), query.join("&"));
        http::request(method, &url, &headers, body)
    }
}

/// The `Authorization` header of a Shared Key request: the account's HMAC-SHA256 of
/// the string to sign, as
/// <https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key>
/// defines it: the verb, eleven standard headers (all empty here but the length, which
/// is empty when 0), the `x-ms-*` headers sorted, and the resource (account, then the
/// URL path, which for the emulator starts with the account again) with its query
/// parameters sorted.
fn shared_key(
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(&str, String)],
    length: usize,
) -> String {
    let length = if length == 0 {
        String::new()
    } else {
        length.to_string()
    };
    let mut ms_headers: Vec<String> = headers
        .iter()
        .filter(|(name, _)| name.starts_with("x-ms-"))
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();
    ms_headers.sort();
    let mut parameters: Vec<String> = query.iter().map(|(k, v)| format!("\n{k}:{v}")).collect();
    parameters.sort();
    let to_sign = format!(
        "{method}\n\n\n{length}\n\n\n\n\n\n\n\n\n{}/{ACCOUNT}{path}{}",
        ms_headers.concat(),
        parameters.concat()
    );
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA256,
        &BASE64.decode(ACCOUNT_KEY).unwrap(),
    );
    let signature = aws_lc_rs::hmac::sign(&key, to_sign.as_bytes());
    format!("SharedKey {ACCOUNT}:{}", BASE64.encode(signature.as_ref()))
}

/// The text of the first `<tag>` in `xml`.
fn element<'a>(xml: &'a str, tag: &str) -> &'a str {
    let start = xml.find(&format!("<{tag}>")).unwrap() + tag.len() + 2;
    let end = start + xml[start..].find(&format!("</{tag}>")).unwrap();
    &xml[start..end]
}
