//! Fills a store with a synthetic fleet for the fleet benchmark (benches/fleet.sh):
//! HOSTS hosts, each with a repository config, a status object naming ENVS
//! environments, and ENVS × BACKUPS manifest objects. `fleet list` reads statuses and
//! lists manifests without reading them, so the manifests are placeholders.
//!
//! `envsnap-fleet-seed STORE_URL HOSTS ENVS BACKUPS` (S3 credentials from `AWS_*`)

use anyhow::{Context, Result};
use chrono::{Duration, Utc};
use envsnap::catalog::Catalog;
use envsnap::fleet::status::{EnvStatus, HostStatus, LastBackup, STATUS_FORMAT};
use envsnap::repo::Repository;
use envsnap::repo::crypto::Keys;
use envsnap::store::Store;
use futures::{StreamExt, TryStreamExt, stream};

/// Requests in flight while seeding.
const CONCURRENCY: usize = 32;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, hosts, envs, backups] = &args[..] else {
        anyhow::bail!("usage: envsnap-fleet-seed STORE_URL HOSTS ENVS BACKUPS");
    };
    let (hosts, envs, backups): (usize, usize, usize) = (
        hosts.parse().context("HOSTS")?,
        envs.parse().context("ENVS")?,
        backups.parse().context("BACKUPS")?,
    );
    let root = Store::from_url(url)?;
    stream::iter(0..hosts)
        .map(|h| seed_host(&root, h, envs, backups))
        .buffer_unordered(CONCURRENCY / 4)
        .try_collect::<Vec<()>>()
        .await?;
    println!("seeded {hosts} hosts × {envs} environments × {backups} backups");
    Ok(())
}

async fn seed_host(root: &Store, index: usize, envs: usize, backups: usize) -> Result<()> {
    let host = format!("web-{index:04}");
    let keys = Keys::none();
    Repository::init(root, &host, &keys, Default::default()).await?;
    let repo = Repository::open(root, &host, keys, Catalog::in_memory()?).await?;
    let now = Utc::now();
    let environments = (0..envs)
        .map(|e| EnvStatus {
            name: format!("env{e}"),
            status: "ready".into(),
            version: Some("1.0".into()),
            schedule: vec!["0 0 3 * * *".into()],
            next_run: Some(now + Duration::hours(12)),
            backups: backups as u64,
            last_backup: Some(LastBackup {
                name: format!("b{}", backups - 1),
                time: now - Duration::hours(2),
                size: 1 << 30,
            }),
            last_failure: None,
            last_drill: None,
            last_error: None,
        })
        .collect();
    let status = HostStatus {
        format: STATUS_FORMAT,
        host: host.clone(),
        written: now,
        started: now - Duration::days(3),
        envsnap: env!("CARGO_PKG_VERSION").into(),
        heartbeat_seconds: 300,
        timezone: "UTC".into(),
        environments,
    };
    repo.put_status(serde_json::to_vec(&status)?).await?;
    let store = root.scoped(&host);
    stream::iter((0..envs).flat_map(|e| (0..backups).map(move |b| (e, b))))
        .map(|(e, b)| {
            let key = format!("manifests/env{e}/{:064x}", index * 1_000_000 + e * 1000 + b);
            let store = store.clone();
            async move { store.put(&key, bytes::Bytes::from_static(b"{}")).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}
