//! The fleet as one value: every host of the store, its environments, and which of
//! them are stale, built from status objects and manifest listings alone.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, stream};
use serde::{Deserialize, Serialize};

use super::stale::{self, Backups};
use super::status::{EnvStatus, HostStatus, LastDrill, LastFailure};
use crate::repo::RepoError;
use crate::repo::crypto::Keys;
use crate::repo::status::{self as objects, ManifestEntry};
use crate::store::Store;

/// Hosts read at once: enough to hide each one's round trips, few enough for any
/// store.
const CONCURRENCY: usize = 16;

/// How much later than the reported completion the newest manifest may be stored
/// and still be the reported backup.
const NAME_SLACK_SECONDS: i64 = 60;

/// One host as the store shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    pub host: String,
    /// The envsnap version its status names.
    pub envsnap: Option<String>,
    /// When it last wrote its status.
    pub heartbeat: Option<DateTime<Utc>>,
    pub heartbeat_age_seconds: Option<i64>,
    pub stale: bool,
    pub stale_reason: Option<String>,
    /// Retired with `fleet forget` (and silent since): never stale.
    pub retired: bool,
    /// Why its status could not be read (wrong key, not a status, a store error).
    pub error: Option<String>,
    pub environments: Vec<EnvView>,
}

/// One environment of a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvView {
    pub name: String,
    /// As last reported; `None` for an environment known only by its backups.
    pub status: Option<String>,
    pub version: Option<String>,
    /// Completed backups in the store.
    pub backups: u64,
    /// The newest backup's name, when the status reported it.
    pub last_backup: Option<String>,
    pub last_backup_at: Option<DateTime<Utc>>,
    pub last_backup_age_seconds: Option<i64>,
    pub next_run: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_failure: Option<LastFailure>,
    pub last_drill: Option<LastDrill>,
    pub stale: bool,
    pub stale_reason: Option<String>,
}

/// The fleet as a watching daemon last read it (`fleet.watch`), for the metrics.
pub type Snapshot = std::sync::Arc<std::sync::RwLock<Option<Vec<HostView>>>>;

/// What staleness is judged against.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub now: DateTime<Utc>,
    /// `fleet.stale_after`.
    pub stale_after: Option<Duration>,
}

/// Every host of the store, by name.
///
/// One status read per host; a host's manifests are listed only when its status
/// cannot be relied on (none, unreadable, or stale: a host that went down may have
/// completed a backup it never reported). A listing can be costly on some stores, and
/// a fresh status already counts its host's backups.
pub async fn read(root: &Store, keys: &Keys, rules: Rules) -> Result<Vec<HostView>, RepoError> {
    let (hosts, retired) =
        tokio::try_join!(objects::list_hosts(root), objects::retired_hosts(root))?;
    let retired: HashMap<String, DateTime<Utc>> = retired.into_iter().collect();
    let retired = &retired;
    Ok(stream::iter(hosts)
        .map(|host| async move {
            let (status, error) = decode(&host, objects::read_status(root, &host, keys).await);
            let retired_at = retired.get(&host).copied();
            let view = host_view(
                &host,
                status.as_ref(),
                error.clone(),
                None,
                retired_at,
                rules,
            );
            if status.is_some() && !view.stale {
                return view;
            }
            match objects::list_manifests(root, &host).await {
                Ok(listed) => host_view(
                    &host,
                    status.as_ref(),
                    error,
                    Some(&listed),
                    retired_at,
                    rules,
                ),
                Err(e) => HostView {
                    error: Some(e.to_string()),
                    ..view
                },
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await)
}

/// A host's status as read: the status, or why there is none to use.
pub fn decode(
    host: &str,
    read: Result<Option<Vec<u8>>, RepoError>,
) -> (Option<HostStatus>, Option<String>) {
    match read.map(|json| json.map(|json| HostStatus::decode(&json))) {
        Ok(Some(Ok(status))) if status.host != host => (
            None,
            Some(format!("its status names another host ({:?})", status.host)),
        ),
        Ok(Some(Ok(status))) => (Some(status), None),
        Ok(Some(Err(e))) => (None, Some(e)),
        Ok(None) => (None, None),
        Err(e) => (None, Some(e.to_string())),
    }
}

/// One host, from its status and, when listed, its manifests.
pub fn host_view(
    host: &str,
    status: Option<&HostStatus>,
    error: Option<String>,
    manifests: Option<&[ManifestEntry]>,
    retired_at: Option<DateTime<Utc>>,
    rules: Rules,
) -> HostView {
    // A host that wrote a status after it was retired is back.
    let retired = retired_at.is_some_and(|at| status.is_none_or(|s| s.written <= at));
    let stale_reason = match (status, retired) {
        (_, true) => None,
        (Some(s), false) => stale::host_stale(
            s.written,
            Duration::from_secs(s.heartbeat_seconds.max(1)),
            rules.now,
            rules.stale_after,
        ),
        // Nothing to judge by: a host just set up (its first status is on the way),
        // or one of an envsnap without heartbeats. Its environments are still judged.
        (None, false) => None,
    };
    HostView {
        host: host.to_owned(),
        envsnap: status.map(|s| s.envsnap.clone()),
        heartbeat: status.map(|s| s.written),
        heartbeat_age_seconds: status.map(|s| seconds(s.written, rules.now)),
        stale: stale_reason.is_some(),
        stale_reason,
        retired,
        error,
        environments: env_views(status, manifests, retired, rules),
    }
}

/// The environments a status reports and those only backups show, by name.
fn env_views(
    status: Option<&HostStatus>,
    manifests: Option<&[ManifestEntry]>,
    retired: bool,
    rules: Rules,
) -> Vec<EnvView> {
    let mut listed: BTreeMap<&str, (u64, Option<DateTime<Utc>>)> = BTreeMap::new();
    for entry in manifests.unwrap_or_default() {
        let (count, newest) = listed.entry(&entry.env).or_default();
        *count += 1;
        *newest = (*newest).max(Some(entry.written));
    }
    let reported: BTreeMap<&str, &EnvStatus> = status
        .map(|s| {
            s.environments
                .iter()
                .map(|e| (e.name.as_str(), e))
                .collect()
        })
        .unwrap_or_default();
    let names: std::collections::BTreeSet<&str> =
        listed.keys().chain(reported.keys()).copied().collect();
    names
        .into_iter()
        .map(|name| {
            let reported = reported.get(name).copied();
            // Without a listing, the status's own count and newest backup.
            let backups = match manifests {
                Some(_) => listed.get(name).copied().unwrap_or_default(),
                None => (
                    reported.map_or(0, |e| e.backups),
                    reported
                        .and_then(|e| e.last_backup.as_ref())
                        .map(|b| b.time),
                ),
            };
            env_view(name, reported, status, backups, retired, rules)
        })
        .collect()
}

fn env_view(
    name: &str,
    reported: Option<&EnvStatus>,
    host: Option<&HostStatus>,
    (backups, newest_manifest): (u64, Option<DateTime<Utc>>),
    retired: bool,
    rules: Rules,
) -> EnvView {
    let last_reported = reported.and_then(|e| e.last_backup.as_ref());
    let last_at = newest_manifest.max(last_reported.map(|b| b.time));
    // The name is known when the status reported the newest backup there is: its
    // manifest reached the store just before the catalog recorded the completion,
    // and the store's clock is not the host's, hence the slack.
    let last_name = last_reported
        .filter(|b| Some(b.time + chrono::Duration::seconds(NAME_SLACK_SECONDS)) >= newest_manifest)
        .map(|b| b.name.clone());
    let timezone = host
        .and_then(|h| h.timezone.parse().ok())
        .unwrap_or(chrono_tz::Tz::UTC);
    let judged = Backups {
        schedule: reported.map_or(&[], |e| e.schedule.as_slice()),
        timezone,
        last: last_at,
        since: host.map_or(rules.now, |h| h.started),
    };
    let stale_reason = match retired {
        true => None,
        false => stale::env_stale(&judged, rules.now, rules.stale_after),
    };
    EnvView {
        name: name.to_owned(),
        status: reported.map(|e| e.status.clone()),
        version: reported.and_then(|e| e.version.clone()),
        backups,
        last_backup: last_name,
        last_backup_at: last_at,
        last_backup_age_seconds: last_at.map(|t| seconds(t, rules.now)),
        next_run: reported.and_then(|e| e.next_run),
        last_error: reported.and_then(|e| e.last_error.clone()),
        last_failure: reported.and_then(|e| e.last_failure.clone()),
        last_drill: reported.and_then(|e| e.last_drill.clone()),
        stale: stale_reason.is_some(),
        stale_reason,
    }
}

fn seconds(time: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (now - time).num_seconds().max(0)
}
