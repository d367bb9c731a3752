//! S3 Object Lock: the few requests object_store cannot send.
//!
//! object_store writes and reads objects but has no way to add Object Lock headers to
//! a put, nor to read or change an object's retention, nor to list object versions.
//! [`S3Lock`] sends those requests itself, signed with object_store's own SigV4
//! signer ([`AwsAuthorizer`]) and the credentials and endpoint settings the store
//! uses: it is built from the same `s3://bucket/prefix` URL and `AWS_*` settings
//! (`AmazonS3Builder::from_env`), keeps the built store's credential provider (so
//! instance, container and web-identity credentials work as they do for the store),
//! and addresses the bucket the way object_store does (path style unless
//! `AWS_VIRTUAL_HOSTED_STYLE_REQUEST` is set; `AWS_ENDPOINT` or
//! `https://s3.<region>.amazonaws.com`).
//!
//! What the requests mean on S3 (a bucket created with Object Lock, which turns
//! versioning on):
//! - A put with a retention date makes that *version* undeletable until the date: in
//!   governance mode only a caller with `s3:BypassGovernanceRetention` sending
//!   `x-amz-bypass-governance-retention` can delete it early, in compliance mode
//!   nobody. A delete without a version id still succeeds: it hides the object
//!   behind a delete marker, and the locked version stays readable by its id. S3
//!   requires a Content-MD5 on such puts; it is sent on every put here.
//! - A legal hold keeps a version until it is lifted, whatever its retention.
//! - Retention can be lengthened, never shortened: [`S3Lock::extend_retention`]
//!   reads the retention first and writes only a later date, so it never shortens a
//!   lock even on a server that would let it (moto does).
//! - Retention and legal hold are read with a HEAD (its `x-amz-object-lock-*`
//!   headers), which S3 answers for callers with `s3:GetObjectRetention` and
//!   `s3:GetObjectLegalHold`; without them the headers are missing and the object
//!   reads as unlocked. (`GET ?retention` would say so, but moto serves the object
//!   itself in answer to it.)
//!
//! On failure: nothing is retried here; errors are [`StoreError`]s sorted as
//! object_store's are (5xx, 408, 429, `SlowDown` and network failures transient,
//! other refusals permanent, a 404 for the object not found), so the store's retry
//! loop can wrap these calls. Messages are one line with the request, the status and
//! S3's `<Code>` and `<Message>`; they never carry credentials or signatures.

use std::fmt::Write as _;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use md5::{Digest as _, Md5};
use object_store::ClientConfigKey;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer};
use object_store::aws::{AwsCredential, AwsCredentialProvider};
use object_store::client::{HttpRequest, HttpRequestBody};
use object_store::path::Path;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use super::error::StoreError;
use wire::{LEGAL_HOLD, MODE, Markers, UNTIL, VERSION_ID};

mod wire;

pub use wire::{LockMode, LockState, ObjectVersion, Retention};

const CONTENT_MD5: HeaderName = HeaderName::from_static("content-md5");

/// How long a connection may take to come up (object_store's default)...
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// ...and how long the server may go silent while answering.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Object Lock requests to one S3 bucket.
pub struct S3Lock {
    client: reqwest::Client,
    credentials: AwsCredentialProvider,
    /// Where the bucket's requests go, without a trailing slash: the endpoint and the
    /// bucket (path style), or the bucket's own host (virtual-hosted style).
    bucket_endpoint: String,
    bucket: String,
    region: String,
    sign_payload: bool,
}

impl std::fmt::Debug for S3Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The credential provider is left out: it may hold the secret.
        f.debug_struct("S3Lock")
            .field("bucket_endpoint", &self.bucket_endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// A request to send: the object (or the bucket), the query, headers and body.
struct Call<'a> {
    method: Method,
    /// `None` for a request to the bucket itself.
    path: Option<&'a Path>,
    /// Unencoded; an empty value is sent as a bare name (`?retention`).
    query: Vec<(&'a str, &'a str)>,
    headers: HeaderMap,
    body: Bytes,
}

/// A successful answer.
struct Answer {
    headers: HeaderMap,
    body: Bytes,
}

/// A failed request: S3's `<Code>` (empty without one) and the error it means.
struct Refusal {
    code: String,
    error: StoreError,
}

impl S3Lock {
    /// For the bucket of an `s3://bucket/prefix` store URL, with the `AWS_*` settings
    /// of the process, as `Store::from_url` opens it.
    pub fn from_url(url: &Url) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::BadUrl {
            // Shown without user, password or query (as `store::redact_url`).
            url: format!(
                "{}://{}{}",
                url.scheme(),
                url.host_str().unwrap_or(""),
                url.path()
            ),
            reason,
        };
        let bucket = match (url.scheme(), url.host_str()) {
            ("s3" | "s3a", Some(bucket)) => bucket.to_owned(),
            _ => return Err(bad("Object Lock needs an s3://bucket store".into())),
        };
        let builder = AmazonS3Builder::from_env().with_url(url.as_str());
        let setting = |key: AmazonS3ConfigKey| builder.get_config_value(&key);
        let flag = |key: AmazonS3ConfigKey| setting(key).is_some_and(|value| is_truthy(&value));
        if flag(AmazonS3ConfigKey::S3Express) {
            return Err(bad("S3 Express One Zone buckets have no Object Lock".into()));
        }
        let region = setting(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        // As object_store's build(): the S3-specific endpoint first; with virtual-hosted
        // requests an endpoint already names the bucket.
        let endpoint =
            setting(AmazonS3ConfigKey::S3Endpoint).or_else(|| setting(AmazonS3ConfigKey::Endpoint));
        let virtual_hosted = flag(AmazonS3ConfigKey::VirtualHostedStyleRequest);
        let bucket_endpoint = match (endpoint, virtual_hosted) {
            (Some(endpoint), true) => endpoint.trim_end_matches('/').to_owned(),
            (Some(endpoint), false) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        // Checked once here, so that every request URL parses.
        Url::parse(&bucket_endpoint)
            .map_err(|e| bad(format!("endpoint {bucket_endpoint}: {e}")))?;
        let sign_payload = !flag(AmazonS3ConfigKey::UnsignedPayload);
        let client = http_client(&builder).map_err(bad)?;
        // The store itself, for its credential provider (and to refuse what it would).
        let store = builder.build().map_err(|e| bad(e.to_string()))?;
        Ok(S3Lock {
            client,
            credentials: store.credentials().clone(),
            bucket_endpoint,
            bucket,
            region,
            sign_payload,
        })
    }

    /// Whether the bucket has Object Lock enabled (false when it has no Object Lock
    /// configuration at all).
    pub async fn bucket_lock_enabled(&self) -> Result<bool, StoreError> {
        let call = Call::new(Method::GET, None, vec![("object-lock", "")]);
        match self.send(call).await {
            Ok(answer) => wire::parse_lock_configuration(&answer.body)
                .map_err(|reason| self.unreadable(&self.bucket_label(), reason)),
            Err(refusal) if refusal.code == "ObjectLockConfigurationNotFoundError" => Ok(false),
            Err(refusal) => Err(refusal.error),
        }
    }

    /// Writes `path` with `retention` (and a legal hold if `legal_hold`), in one put.
    /// Returns the version id S3 gave the new version (`None` if it gave none).
    pub async fn put_locked(
        &self,
        path: &Path,
        data: Bytes,
        retention: &Retention,
        legal_hold: bool,
    ) -> Result<Option<String>, StoreError> {
        let mut call = Call::new(Method::PUT, Some(path), vec![]).with_body(data);
        let until = wire::format_date(retention.until);
        call.headers
            .insert(MODE, HeaderValue::from_static(retention.mode.as_str()));
        call.headers.insert(UNTIL, header_value(&until));
        if legal_hold {
            call.headers
                .insert(LEGAL_HOLD, HeaderValue::from_static("ON"));
        }
        let answer = self.send(call).await.map_err(|refusal| refusal.error)?;
        Ok(answer
            .headers
            .get(VERSION_ID)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned))
    }

    /// Lengthens the lock of `path`'s current version to `retention`: two requests
    /// (a HEAD, then the PUT to the version it named) when it lengthens, one when the
    /// lock already reaches the date, which leaves it as it is (S3 refuses to shorten
    /// a lock; moto would not). A compliance lock stays compliance. NotFound when the
    /// current version is a delete marker.
    pub async fn extend_retention(
        &self,
        path: &Path,
        retention: &Retention,
    ) -> Result<(), StoreError> {
        let until = wire::whole_seconds(retention.until);
        let current = self.lock_state(path, None).await?;
        if wire::reaches(&current.retention, until) {
            return Ok(());
        }
        // The version just read: a version written meanwhile is not extended blindly.
        let version = current.version_id.as_deref();
        let mut query = vec![("retention", "")];
        query.extend(version.map(|id| ("versionId", id)));
        // A compliance lock cannot become a governance one: it stays compliance.
        let mode = match current.retention {
            Some(Retention {
                mode: LockMode::Compliance,
                ..
            }) => LockMode::Compliance,
            _ => retention.mode,
        };
        let body = wire::retention_xml(mode, until);
        match self
            .send(Call::new(Method::PUT, Some(path), query).with_body(body))
            .await
        {
            Ok(_) => Ok(()),
            // Refused as a shortening: another writer may have lengthened it since.
            Err(refusal) if matches!(refusal.code.as_str(), "AccessDenied" | "InvalidRequest") => {
                let now = self.lock_state(path, version).await?;
                if wire::reaches(&now.retention, until) {
                    Ok(())
                } else {
                    Err(refusal.error)
                }
            }
            Err(refusal) => Err(refusal.error),
        }
    }

    /// The retention of `path` (of one `version`, or the current one); `None` when it
    /// has none.
    pub async fn retention(
        &self,
        path: &Path,
        version: Option<&str>,
    ) -> Result<Option<Retention>, StoreError> {
        Ok(self.lock_state(path, version).await?.retention)
    }

    /// Retention and legal hold of `path` (of one `version`, or the current one), read
    /// from a HEAD's headers.
    pub async fn lock_state(
        &self,
        path: &Path,
        version: Option<&str>,
    ) -> Result<LockState, StoreError> {
        let query = version
            .map(|id| vec![("versionId", id)])
            .unwrap_or_default();
        let answer = self
            .send(Call::new(Method::HEAD, Some(path), query))
            .await
            .map_err(|refusal| refusal.error)?;
        wire::lock_state_from_headers(&answer.headers)
            .map_err(|reason| self.unreadable(path.as_ref(), reason))
    }

    /// Puts a legal hold on `path`'s current version, or lifts it.
    pub async fn set_legal_hold(&self, path: &Path, on: bool) -> Result<(), StoreError> {
        let body = wire::legal_hold_xml(on);
        let call = Call::new(Method::PUT, Some(path), vec![("legal-hold", "")]).with_body(body);
        self.send(call)
            .await
            .map(drop)
            .map_err(|refusal| refusal.error)
    }

    /// Every version and delete marker under the directory `prefix` (the whole bucket
    /// if empty), page after page: sorted by key, each key's newest first.
    pub async fn list_versions(&self, prefix: &Path) -> Result<Vec<ObjectVersion>, StoreError> {
        let prefix = match prefix.as_ref() {
            "" => String::new(),
            dir => format!("{dir}/"),
        };
        let mut versions = Vec::new();
        let mut next: Option<Markers> = None;
        loop {
            let mut query = vec![("versions", ""), ("prefix", prefix.as_str())];
            if let Some(markers) = &next {
                query.push(("key-marker", &markers.key));
                query.extend(
                    markers
                        .version_id
                        .as_deref()
                        .map(|id| ("version-id-marker", id)),
                );
            }
            let answer = self
                .send(Call::new(Method::GET, None, query))
                .await
                .map_err(|refusal| refusal.error)?;
            let page = wire::parse_versions(&answer.body)
                .map_err(|reason| self.unreadable(&prefix, reason))?;
            versions.extend(page.versions);
            match page.next {
                // A page that does not move on would be asked for forever.
                Some(markers) if Some(&markers) == next.as_ref() => {
                    return Err(self.unreadable(&prefix, "the listing repeats its page".into()));
                }
                Some(markers) => next = Some(markers),
                None => break,
            }
        }
        versions.sort_by(|a, b| {
            (
                a.key.as_str(),
                !a.is_latest,
                std::cmp::Reverse(a.last_modified),
            )
                .cmp(&(
                    b.key.as_str(),
                    !b.is_latest,
                    std::cmp::Reverse(b.last_modified),
                ))
        });
        Ok(versions)
    }

    /// Signs and sends `call`: its answer if S3 says yes, else what went wrong.
    async fn send(&self, call: Call<'_>) -> Result<Answer, Refusal> {
        let key = match call.path {
            Some(path) => path.as_ref().to_owned(),
            None => self.bucket_label(),
        };
        let what = call.describe();
        let url = self.url(call.path, &call.query);
        let credential = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| Refusal {
                code: String::new(),
                error: StoreError::classify(&key, e),
            })?;
        let headers = self.sign(&credential, &call, &url).map_err(|e| Refusal {
            code: String::new(),
            error: StoreError::classify(&key, e),
        })?;
        let unreachable = |e: reqwest::Error| Refusal {
            code: String::new(),
            error: StoreError::Transient {
                key: key.clone(),
                reason: format!("{what}: {}", error_chain(&e.without_url())),
            },
        };
        let response = self
            .client
            .request(call.method.clone(), url)
            .headers(headers)
            .body(call.body)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(unreachable)?;
        if status.is_success() {
            return Ok(Answer { headers, body });
        }
        let error = wire::parse_error(&body);
        let mut reason = format!("{what} answered {status}");
        for part in [&error.code, &error.message] {
            if !part.is_empty() {
                let _ = write!(reason, ": {}", one_line(part));
            }
        }
        Err(Refusal {
            error: StoreError::from_s3_answer(&key, status.as_u16(), &error.code, reason),
            code: error.code,
        })
    }

    /// The headers of `call` signed for `url` (SigV4, as object_store signs its own).
    fn sign(
        &self,
        credential: &AwsCredential,
        call: &Call<'_>,
        url: &Url,
    ) -> object_store::Result<HeaderMap> {
        let mut request = HttpRequest::new(HttpRequestBody::from(call.body.clone()));
        *request.method_mut() = call.method.clone();
        *request.uri_mut() = url
            .as_str()
            .parse()
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        *request.headers_mut() = call.headers.clone();
        AwsAuthorizer::new(credential, "s3", &self.region)
            .with_sign_payload(self.sign_payload)
            .try_authorize(&mut request, None)?;
        Ok(request.into_parts().0.headers)
    }

    /// The URL of `path` (or of the bucket), keys and query encoded as S3 signs them.
    fn url(&self, path: Option<&Path>, query: &[(&str, &str)]) -> Url {
        let mut text = self.bucket_endpoint.clone();
        if let Some(path) = path {
            text.push('/');
            text.push_str(&wire::encode(path.as_ref(), true));
        }
        for (index, (name, value)) in query.iter().enumerate() {
            text.push(if index == 0 { '?' } else { '&' });
            text.push_str(&wire::encode(name, false));
            if !value.is_empty() {
                text.push('=');
                text.push_str(&wire::encode(value, false));
            }
        }
        // The endpoint was accepted by object_store's builder and the rest is encoded.
        Url::parse(&text).expect("an S3 request URL")
    }

    fn bucket_label(&self) -> String {
        format!("bucket {}", self.bucket)
    }

    fn unreadable(&self, key: &str, reason: String) -> StoreError {
        StoreError::Permanent {
            key: key.to_owned(),
            reason: format!("unreadable answer from S3: {reason}"),
        }
    }
}

impl<'a> Call<'a> {
    fn new(method: Method, path: Option<&'a Path>, query: Vec<(&'a str, &'a str)>) -> Self {
        Call {
            method,
            path,
            query,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// With `body` and its Content-MD5 (which S3 requires on locked puts and on
    /// retention and legal-hold changes).
    fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        let digest = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&self.body));
        self.headers.insert(CONTENT_MD5, header_value(&digest));
        self
    }

    /// `PUT ?retention`, `HEAD`, ...: the request in an error message.
    fn describe(&self) -> String {
        match self.query.first() {
            Some((name, "")) => format!("{} ?{name}", self.method),
            _ => self.method.to_string(),
        }
    }
}

/// An HTTP client with the store's transport settings: plain HTTP only if allowed,
/// the proxy it names (`AWS_PROXY_URL`, `AWS_PROXY_EXCLUDES`).
fn http_client(builder: &AmazonS3Builder) -> Result<reqwest::Client, String> {
    let setting = |key| builder.get_config_value(&AmazonS3ConfigKey::Client(key));
    let allow_http = setting(ClientConfigKey::AllowHttp).is_some_and(|value| is_truthy(&value));
    let mut client = reqwest::Client::builder()
        .https_only(!allow_http)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT);
    if let Some(url) = setting(ClientConfigKey::ProxyUrl) {
        let proxy = reqwest::Proxy::all(&url).map_err(|e| format!("proxy: {}", e.without_url()))?;
        let excludes = setting(ClientConfigKey::ProxyExcludes);
        client =
            client.proxy(proxy.no_proxy(excludes.and_then(|e| reqwest::NoProxy::from_string(&e))));
    }
    client.build().map_err(|e| e.without_url().to_string())
}

/// Dates, digests and lock modes only, all ASCII.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("an ASCII header value")
}

/// `AWS_*` flags as object_store reads them.
fn is_truthy(value: &str) -> bool {
    ["1", "true", "on", "yes", "y"]
        .iter()
        .any(|truthy| value.eq_ignore_ascii_case(truthy))
}

/// S3's message text on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A network error and its causes (`connection refused`, ...) on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock_on(bucket_endpoint: &str) -> S3Lock {
        let credential = AwsCredential {
            key_id: "AKIDEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI-secret".into(),
            token: None,
        };
        S3Lock {
            client: reqwest::Client::new(),
            credentials: std::sync::Arc::new(object_store::StaticCredentialProvider::new(
                credential,
            )),
            bucket_endpoint: bucket_endpoint.into(),
            bucket: "backups".into(),
            region: "eu-west-1".into(),
            sign_payload: true,
        }
    }

    #[test]
    fn keys_and_queries_are_encoded_as_s3_signs_them() {
        let lock = lock_on("https://s3.eu-west-1.amazonaws.com/backups");
        let path = Path::from("fleet/web 1/packs/a+b=c&d");
        assert_eq!(
            lock.url(Some(&path), &[("retention", ""), ("versionId", "3/L4k+=")])
                .as_str(),
            "https://s3.eu-west-1.amazonaws.com/backups/fleet/web%201/packs/a%2Bb%3Dc%26d\
             ?retention&versionId=3%2FL4k%2B%3D"
        );
        // Path escapes `~` and non-ASCII itself (`%7E`); the `%` is encoded again on the
        // wire, as object_store's own requests do, so both name the same object.
        let escaped = Path::from("a~é");
        assert_eq!(
            lock.url(Some(&escaped), &[]).as_str(),
            "https://s3.eu-west-1.amazonaws.com/backups/a%257E%25C3%25A9"
        );
        assert_eq!(
            lock.url(None, &[("versions", ""), ("prefix", "fleet/")])
                .as_str(),
            "https://s3.eu-west-1.amazonaws.com/backups?versions&prefix=fleet%2F"
        );
        let call = Call::new(Method::PUT, Some(&path), vec![("legal-hold", "")]).with_body("x");
        assert_eq!(call.describe(), "PUT ?legal-hold");
        // MD5 of "x", base64 (`printf x | openssl md5 -binary | base64`).
        assert_eq!(call.headers[CONTENT_MD5], "ndTkYSaMgDT1yFZOFVxnpg==");
    }

    #[test]
    fn only_s3_stores_have_object_lock() {
        for url in ["gs://bucket/fleet", "file:///var/backups", "memory:"] {
            let error = S3Lock::from_url(&Url::parse(url).unwrap()).unwrap_err();
            assert!(matches!(error, StoreError::BadUrl { .. }), "{error}");
        }
    }

    #[test]
    fn requests_are_signed_and_debug_shows_no_secret() {
        let lock = lock_on("http://127.0.0.1:9/backups");
        let credential = AwsCredential {
            key_id: "AKIDEXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI-secret".into(),
            token: None,
        };
        let path = Path::from("p/k");
        let call = Call::new(Method::HEAD, Some(&path), vec![]);
        let headers = lock
            .sign(&credential, &call, &lock.url(Some(&path), &[]))
            .unwrap();
        let authorization = headers["authorization"].to_str().unwrap();
        assert!(authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"));
        assert!(authorization.contains("/eu-west-1/s3/aws4_request"));
        let debug = format!("{lock:?}");
        assert!(
            !debug.contains("secret") && !debug.contains("AKID"),
            "{debug}"
        );
    }
}
