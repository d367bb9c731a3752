//! What went wrong talking to the store, sorted by what to do about it.
//!
//! The retry loop (`store/retry.rs`) retries what is [`StoreError::is_transient`]
//! and fails at once on the rest, so the sorting here decides whether a job waits
//! out an outage or reports the store's refusal right away. object_store reports
//! most HTTP failures as `Generic` with the status in its message, so the status is
//! read back from the message: 5xx, 408 and 429 (and S3's `SlowDown`) pass, other
//! 4xx answers do not; network failures (connect, reset, timeout, a body cut short)
//! pass; a full or read-only local disk does not.

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {key} not found in the store")]
    NotFound { key: String },
    #[error("store URL {url:?} is not valid: {reason}")]
    BadUrl { url: String, reason: String },
    /// Worth retrying: the store may answer later (network, timeouts, throttling).
    #[error("store unreachable while accessing {key}: {reason}")]
    Transient { key: String, reason: String },
    /// Retrying will not help: permissions, bad configuration, unsupported operation.
    #[error("store refused access to {key}: {reason}")]
    Permanent { key: String, reason: String },
}

impl StoreError {
    /// Whether a later attempt of the same operation may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient { .. })
    }

    /// The same error, naming `key` (relative to the repository) as the object.
    pub(super) fn for_key(self, key: &str) -> Self {
        let key = key.to_owned();
        match self {
            StoreError::NotFound { .. } => StoreError::NotFound { key },
            StoreError::Transient { reason, .. } => StoreError::Transient { key, reason },
            StoreError::Permanent { reason, .. } => StoreError::Permanent { key, reason },
            bad @ StoreError::BadUrl { .. } => bad,
        }
    }

    pub(super) fn classify(key: &str, error: object_store::Error) -> Self {
        use object_store::Error as E;
        let key = key.to_owned();
        match error {
            E::NotFound { .. } => StoreError::NotFound { key },
            E::Generic { store, source } => {
                let reason = format!("{store}: {source}");
                if generic_is_transient(&reason) {
                    StoreError::Transient { key, reason }
                } else {
                    StoreError::Permanent { key, reason }
                }
            }
            other => StoreError::Permanent {
                key,
                reason: other.to_string(),
            },
        }
    }

    /// S3's answer to a request signed here rather than by object_store (Object Lock,
    /// `store/object_lock.rs`), sorted the same way. `code` is S3's `<Code>`, empty
    /// when the answer has no body (HEAD): a 404 for the object or one of its
    /// versions is a missing object.
    pub(super) fn from_s3_answer(key: &str, status: u16, code: &str, reason: String) -> Self {
        let key = key.to_owned();
        if status == 404 && matches!(code, "" | "NoSuchKey" | "NoSuchVersion") {
            StoreError::NotFound { key }
        } else if status_is_transient(status) || code == "SlowDown" {
            StoreError::Transient { key, reason }
        } else {
            StoreError::Permanent { key, reason }
        }
    }

    /// The same error, its reason saying how long it was retried before giving up.
    pub(super) fn after_retrying(self, waited: std::time::Duration) -> Self {
        match self {
            StoreError::Transient { key, reason } => StoreError::Transient {
                key,
                reason: format!(
                    "{reason} (still failing after {} of retries: store.retry_timeout)",
                    crate::message::human_duration(waited.as_secs())
                ),
            },
            other => other,
        }
    }
}

/// Whether a `Generic` error (HTTP status, network or local I/O) may pass.
fn generic_is_transient(reason: &str) -> bool {
    if let Some(status) = http_status(reason) {
        return status_is_transient(status);
    }
    const LASTING: [&str; 4] = [
        "ermission denied",
        "Forbidden",
        "No space left on device",
        "Read-only file system",
    ];
    !LASTING.iter().any(|text| reason.contains(text))
}

/// Whether an HTTP status may pass: the server's trouble, a timeout, throttling.
fn status_is_transient(status: u16) -> bool {
    status >= 500 || status == 408 || status == 429
}

/// The HTTP status object_store's message names (`... status code: 503 Service ...`).
fn http_status(reason: &str) -> Option<u16> {
    let (_, rest) = reason.split_once("status code: ")?;
    rest.get(..3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_sort_into_transient_and_permanent() {
        let generic = |text: &str| {
            StoreError::classify(
                "k",
                object_store::Error::Generic {
                    store: "S3",
                    source: text.into(),
                },
            )
        };
        for passing in [
            "Server returned non-2xx status code: 503 Service Unavailable: SlowDown",
            "Server returned non-2xx status code: 500 Internal Server Error: ",
            "Server returned non-2xx status code: 429 Too Many Requests: ",
            "HTTP error: error sending request: connection reset by peer",
            "error decoding response body",
        ] {
            assert!(generic(passing).is_transient(), "{passing}");
        }
        for lasting in [
            "Server returned non-2xx status code: 400 Bad Request: InvalidArgument",
            "Server returned non-2xx status code: 405 Method Not Allowed: ",
            "Unable to open file: Permission denied (os error 13)",
            "Unable to copy data to file: No space left on device (os error 28)",
        ] {
            assert!(!generic(lasting).is_transient(), "{lasting}");
        }
    }

    #[test]
    fn giving_up_says_how_long_it_tried() {
        let error = StoreError::Transient {
            key: "packs/ab/x".into(),
            reason: "503".into(),
        }
        .after_retrying(std::time::Duration::from_secs(120));
        assert_eq!(
            error.to_string(),
            "store unreachable while accessing packs/ab/x: 503 (still failing after 2m 0s of \
             retries: store.retry_timeout)"
        );
    }
}
