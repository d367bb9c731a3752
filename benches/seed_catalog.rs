//! Fills a daemon's catalog with N completed backups of one environment, for the
//! control-plane benchmark (benches/control_plane.sh). The backups exist only in the
//! catalog: listing and status read nothing else.
//!
//! `envsnap-seed CATALOG ENV N`

use anyhow::{Context, Result};
use chrono::{Duration, Utc};
use envsnap::catalog::{ActivityEntry, BackupName, Catalog, CompletedBackup, PartSize};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, env, count] = &args[..] else {
        anyhow::bail!("usage: envsnap-seed CATALOG ENV N");
    };
    let count: usize = count.parse().context("N")?;
    let catalog = Catalog::open(std::path::Path::new(path))?;
    let parts = [
        ("code", 40_000_000),
        ("database:main", 200_000_000),
        ("files:uploads", 900_000_000),
    ]
    .map(|(part, size)| PartSize {
        part: part.into(),
        size,
        stored: size / 100,
    });
    // Within the retention window, so the daemon's prune keeps them all.
    let start = Utc::now() - Duration::minutes(count as i64);
    for i in 0..count {
        let name = format!("seed-{i:06}");
        let job = catalog.queue_backup(
            env,
            BackupName::Exact(&name),
            "bench-host",
            "scheduled",
            "root",
            None,
        )?;
        catalog.start_job(job.id)?;
        let created = start + Duration::minutes(i as i64);
        let activity = ActivityEntry {
            time: created,
            user: "root".into(),
            env: Some(env.clone()),
            action: "backup".into(),
            backup: Some(name.clone()),
            outcome: "succeeded".into(),
            detail: None,
        };
        let done = CompletedBackup {
            env,
            name: &name,
            manifest: &format!("20261124T000000Z-{i:08x}"),
            version: "1.0",
            created,
            completed: created + Duration::minutes(3),
            expires: Some(created + Duration::days(14)),
            parts: &parts,
        };
        catalog.finish_backup(job.id, &done, &activity)?;
    }
    println!("seeded {count} backups of {env}");
    Ok(())
}
