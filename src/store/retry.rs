//! Retrying what the store may answer later: exponential backoff with jitter,
//! bounded by a total time (`store.retry_timeout`).
//!
//! Every [`Store`](super::Store) operation goes through [`retrying`]: a whole
//! operation is attempted again, a GET with its body, so a response cut short is
//! retried like a refused connection. Only [`StoreError::is_transient`] errors are
//! retried (5xx, 408, 429, network failures); a permanent one (403, a bad request, a
//! full disk) fails the job at once with the store's message. Each wait is drawn at
//! random between half and all of a ceiling that doubles from 200 ms to 10 s, so
//! jobs that failed together do not come back together. No attempt starts once the
//! total time is spent: the last error is returned, saying how long it was retried.
//! Nor once the daemon stops ([`Store::stop_retrying`](super::Store::stop_retrying)):
//! a shutdown waits for no outage.
//!
//! object_store keeps its own per-request retry underneath, cut to a few quick
//! attempts (`inner_retry_config`): it alone covers the parts of the multipart
//! uploads it drives itself (link exports), and it absorbs one-off blips cheaply.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::StoreError;

/// The first backoff ceiling; it doubles after every failed attempt.
const FIRST_WAIT: Duration = Duration::from_millis(200);
/// The longest single wait.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// Attempts retried since the daemon started, for the metrics.
static RETRIES: AtomicU64 = AtomicU64::new(0);

/// How many store requests were attempted again since the daemon started.
pub fn retries_total() -> u64 {
    RETRIES.load(Ordering::Relaxed)
}

/// Runs `attempt` until it succeeds, fails for good, `timeout` is spent or `stop`
/// is cancelled.
pub(super) async fn retrying<T, Fut>(
    timeout: Duration,
    stop: &CancellationToken,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, StoreError>
where
    Fut: Future<Output = Result<T, StoreError>>,
{
    let started = Instant::now();
    let mut ceiling = FIRST_WAIT;
    loop {
        match attempt().await {
            Err(error) if error.is_transient() => {
                let wait = jittered(ceiling);
                let waited = started.elapsed();
                if waited + wait > timeout {
                    return Err(error.after_retrying(waited));
                }
                tracing::debug!(%error, wait_ms = wait.as_millis() as u64, "retrying a store request");
                RETRIES.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return Err(error.after_retrying(waited)),
                }
                ceiling = (ceiling * 2).min(MAX_WAIT);
            }
            done => return done,
        }
    }
}

/// A wait between half and all of `ceiling`.
fn jittered(ceiling: Duration) -> Duration {
    let fraction = getrandom::u32().unwrap_or(u32::MAX) as f64 / u32::MAX as f64;
    ceiling.mul_f64(0.5 + fraction / 2.0)
}

/// object_store's own per-request retry: a few quick attempts under ours.
pub(super) fn inner_retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig::default(),
        max_retries: 2,
        retry_timeout: Duration::from_secs(20),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn transient() -> StoreError {
        StoreError::Transient {
            key: "k".into(),
            reason: "503".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_the_store_answers() {
        let calls = AtomicU32::new(0);
        let result = retrying(
            Duration::from_secs(60),
            &CancellationToken::new(),
            || async {
                match calls.fetch_add(1, Ordering::Relaxed) {
                    0..=3 => Err(transient()),
                    _ => Ok("answer"),
                }
            },
        )
        .await;
        assert_eq!(result.unwrap(), "answer");
        assert_eq!(calls.load(Ordering::Relaxed), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_fail_at_once() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retrying(
            Duration::from_secs(60),
            &CancellationToken::new(),
            || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::Permanent {
                    key: "k".into(),
                    reason: "403 AccessDenied".into(),
                })
            },
        )
        .await;
        assert!(matches!(result, Err(StoreError::Permanent { .. })));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retrying_stops_when_the_time_is_spent() {
        let started = tokio::time::Instant::now();
        let result: Result<(), _> = retrying(
            Duration::from_secs(30),
            &CancellationToken::new(),
            || async { Err(transient()) },
        )
        .await;
        let spent = started.elapsed();
        assert!(spent <= Duration::from_secs(30), "{spent:?}");
        assert!(spent >= Duration::from_secs(15), "{spent:?}");
        let message = result.unwrap_err().to_string();
        assert!(
            message.contains("of retries: store.retry_timeout"),
            "{message}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_daemon_waits_for_no_retry() {
        let stop = CancellationToken::new();
        stop.cancel();
        let started = tokio::time::Instant::now();
        let result: Result<(), _> = retrying(Duration::from_secs(300), &stop, || async {
            Err(transient())
        })
        .await;
        assert!(result.unwrap_err().is_transient());
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[test]
    fn waits_are_jittered_within_their_ceiling() {
        let waits: Vec<_> = (0..50).map(|_| jittered(Duration::from_secs(4))).collect();
        assert!(waits.iter().all(|w| *w >= Duration::from_secs(2)));
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(4)));
        assert!(waits.iter().any(|w| *w != waits[0]), "not all the same");
    }
}
