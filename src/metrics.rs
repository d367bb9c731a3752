//! Prometheus metrics, on an opt-in loopback listener (`daemon.metrics_listen`).
//!
//! `GET /metrics` answers in the OpenMetrics text format (which Prometheus reads),
//! built at each scrape from the catalog, so the figures survive restarts and need no
//! bookkeeping in the jobs. The listener is plain HTTP without authentication, which is
//! why the config accepts loopback addresses only; it serves at most
//! [`MAX_CONNECTIONS`] clients at once and drops one that does not send its request
//! headers within [`HEADER_TIMEOUT`].

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, EnvStats, JobCounts, JobOutcomes};
use crate::config::LiveConfig;
use crate::fleet::view::HostView;

const MAX_CONNECTIONS: usize = 16;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a scrape reads: the catalog, and the config for the environments to report.
#[derive(Clone)]
pub struct Sources {
    pub config: LiveConfig,
    pub catalog: Catalog,
    /// The fleet as last watched (`fleet.watch`); empty without.
    pub fleet: crate::fleet::view::Snapshot,
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, sources: Sources, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // dropped: a scraper retries
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let sources = sources.clone();
                async move { Ok::<_, Infallible>(respond(&sources, &request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

async fn respond(sources: &Sources, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a static response is valid")
    };
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics\n".into(),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".into(),
        );
    }
    match scrape(sources).await {
        Ok(text) => reply(StatusCode::OK, CONTENT_TYPE, text),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the catalog");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            )
        }
    }
}

/// The figures, read from the catalog now.
async fn scrape(sources: &Sources) -> Result<String, crate::catalog::CatalogError> {
    let envs: Vec<String> = sources.config.get().environments.keys().cloned().collect();
    let (stats, outcomes, counts) = sources
        .catalog
        .blocking(move |c| Ok((c.env_stats(&envs)?, c.job_outcomes()?, c.job_counts()?)))
        .await?;
    let fleet = sources.fleet.read().expect("not poisoned").clone();
    Ok(render(&stats, &outcomes, &counts, fleet.as_deref()))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvLabels {
    env: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    env: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The OpenMetrics text of these figures.
pub fn render(
    stats: &[EnvStats],
    outcomes: &[JobOutcomes],
    counts: &JobCounts,
    fleet: Option<&[HostView]>,
) -> String {
    let mut registry = Registry::with_prefix("envsnap");
    register_environments(&mut registry, stats);
    register_drills(&mut registry, stats);
    register_jobs(&mut registry, outcomes, counts);
    if let Some(hosts) = fleet {
        register_fleet(&mut registry, hosts);
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    text
}

/// Per environment: its status, its backups, and its newest completed backup.
fn register_environments(registry: &mut Registry, stats: &[EnvStats]) {
    let status = Family::<StatusLabels, Gauge>::default();
    let backups = Family::<EnvLabels, Gauge>::default();
    let last_success = Family::<EnvLabels, FloatGauge>::default();
    let last_duration = Family::<EnvLabels, FloatGauge>::default();
    let last_size = Family::<EnvLabels, Gauge>::default();
    let last_stored = Family::<EnvLabels, Gauge>::default();
    for env in stats {
        let labels = EnvLabels {
            env: env.env.clone(),
        };
        status
            .get_or_create(&StatusLabels {
                env: env.env.clone(),
                status: env.status.clone(),
            })
            .set(1);
        backups.get_or_create(&labels).set(env.backups as i64);
        if let (Some(time), Some(duration)) = (env.last_success, env.last_duration_seconds) {
            let seconds = time.timestamp_millis() as f64 / 1000.0;
            last_success.get_or_create(&labels).set(seconds);
            last_duration.get_or_create(&labels).set(duration);
            last_size.get_or_create(&labels).set(env.last_size as i64);
            last_stored
                .get_or_create(&labels)
                .set(env.last_stored as i64);
        }
    }
    registry.register(
        "environment_status",
        "1 for the environment's current status (ready, backing-up, updating, update-failed)",
        status,
    );
    registry.register("backups", "Completed backups listed", backups);
    registry.register(
        "backup_last_success_timestamp_seconds",
        "When the newest completed backup completed (Unix time)",
        last_success,
    );
    registry.register(
        "backup_last_duration_seconds",
        "How long the newest completed backup took",
        last_duration,
    );
    registry.register(
        "backup_last_size_bytes",
        "Logical size of the newest completed backup",
        last_size,
    );
    registry.register(
        "backup_last_stored_bytes",
        "Bytes the newest completed backup newly stored",
        last_stored,
    );
}

/// Per environment: the newest passed drill, and how many drills failed.
fn register_drills(registry: &mut Registry, stats: &[EnvStats]) {
    let last_success = Family::<EnvLabels, FloatGauge>::default();
    let last_duration = Family::<EnvLabels, FloatGauge>::default();
    let failures = Family::<EnvLabels, Counter>::default();
    for env in stats {
        let labels = EnvLabels {
            env: env.env.clone(),
        };
        failures.get_or_create(&labels).inc_by(env.drill_failures);
        if let (Some(time), Some(duration)) =
            (env.drill_last_success, env.drill_last_duration_seconds)
        {
            let seconds = time.timestamp_millis() as f64 / 1000.0;
            last_success.get_or_create(&labels).set(seconds);
            last_duration.get_or_create(&labels).set(duration);
        }
    }
    registry.register(
        "drill_last_success_timestamp_seconds",
        "When the newest passed restore drill finished (Unix time)",
        last_success,
    );
    registry.register(
        "drill_last_duration_seconds",
        "How long the newest passed restore drill took",
        last_duration,
    );
    registry.register("drill_failures", "Restore drills that failed", failures);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostEnvLabels {
    host: String,
    /// `""` for the host itself (its heartbeat).
    env: String,
}

/// Every host of the store as the watch last read it (`fleet.watch`).
fn register_fleet(registry: &mut Registry, hosts: &[HostView]) {
    let heartbeat = Family::<HostLabels, FloatGauge>::default();
    let last_backup = Family::<HostEnvLabels, FloatGauge>::default();
    let stale = Family::<HostEnvLabels, Gauge>::default();
    let seconds = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis() as f64 / 1000.0;
    for host in hosts.iter().filter(|h| !h.retired) {
        let labels = |env: &str| HostEnvLabels {
            host: host.host.clone(),
            env: env.to_owned(),
        };
        if let Some(time) = host.heartbeat {
            heartbeat
                .get_or_create(&HostLabels {
                    host: host.host.clone(),
                })
                .set(seconds(time));
        }
        stale.get_or_create(&labels("")).set(host.stale.into());
        for env in &host.environments {
            stale
                .get_or_create(&labels(&env.name))
                .set(env.stale.into());
            if let Some(time) = env.last_backup_at {
                last_backup
                    .get_or_create(&labels(&env.name))
                    .set(seconds(time));
            }
        }
    }
    registry.register(
        "fleet_heartbeat_timestamp_seconds",
        "When each host of the store last wrote its status (Unix time)",
        heartbeat,
    );
    registry.register(
        "fleet_last_backup_timestamp_seconds",
        "When each host's environment last completed a backup (Unix time)",
        last_backup,
    );
    registry.register(
        "fleet_stale",
        "1 when a host's heartbeat (env=\"\") or an environment's backups are stale",
        stale,
    );
}

/// Jobs finished by kind and outcome, and jobs queued and running now.
fn register_jobs(registry: &mut Registry, outcomes: &[JobOutcomes], counts: &JobCounts) {
    let finished = Family::<JobLabels, Counter>::default();
    let active = Family::<StateLabels, Gauge>::default();
    for outcome in outcomes {
        let labels = JobLabels {
            kind: outcome.kind.clone(),
            state: outcome.state.clone(),
        };
        finished.get_or_create(&labels).inc_by(outcome.count);
    }
    for (state, count) in [("queued", counts.queued), ("running", counts.running)] {
        let labels = StateLabels {
            state: state.into(),
        };
        active.get_or_create(&labels).set(count as i64);
    }
    registry.register(
        "jobs_finished",
        "Jobs finished, by kind and outcome",
        finished,
    );
    registry.register("jobs", "Jobs queued and running now", active);
    let retries = Counter::<u64>::default();
    retries.inc_by(crate::store::retries_total());
    registry.register(
        "store_retries",
        "Store requests attempted again after a transient failure since the daemon started",
        retries,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_render_as_openmetrics() {
        let stats = vec![
            EnvStats {
                env: "live".into(),
                status: "ready".into(),
                backups: 3,
                last_success: Some("2026-11-24T03:00:05Z".parse().unwrap()),
                last_duration_seconds: Some(4.5),
                last_size: 1000,
                last_stored: 10,
                drill_last_success: Some("2026-11-24T05:00:02Z".parse().unwrap()),
                drill_last_duration_seconds: Some(12.5),
                drill_failures: 1,
            },
            EnvStats {
                env: "new".into(),
                status: "update-failed".into(),
                backups: 0,
                last_success: None,
                last_duration_seconds: None,
                last_size: 0,
                last_stored: 0,
                drill_last_success: None,
                drill_last_duration_seconds: None,
                drill_failures: 0,
            },
        ];
        let outcomes = vec![JobOutcomes {
            kind: "backup".into(),
            state: "failed".into(),
            count: 2,
        }];
        let text = render(
            &stats,
            &outcomes,
            &JobCounts {
                queued: 1,
                running: 0,
            },
            None,
        );
        for line in [
            "envsnap_environment_status{env=\"live\",status=\"ready\"} 1",
            "envsnap_environment_status{env=\"new\",status=\"update-failed\"} 1",
            "envsnap_backups{env=\"live\"} 3",
            "envsnap_backup_last_success_timestamp_seconds{env=\"live\"} 1795489205.0",
            "envsnap_backup_last_duration_seconds{env=\"live\"} 4.5",
            "envsnap_backup_last_size_bytes{env=\"live\"} 1000",
            "envsnap_jobs_finished_total{kind=\"backup\",state=\"failed\"} 2",
            "envsnap_drill_last_success_timestamp_seconds{env=\"live\"} 1795496402.0",
            "envsnap_drill_last_duration_seconds{env=\"live\"} 12.5",
            "envsnap_drill_failures_total{env=\"live\"} 1",
            "envsnap_drill_failures_total{env=\"new\"} 0",
            "envsnap_jobs{state=\"queued\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(!text.contains("last_success_timestamp_seconds{env=\"new\"}"));
        assert!(text.ends_with("# EOF\n"));
    }
}
