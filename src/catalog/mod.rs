//! The catalog: the daemon's SQLite database, an index of the store.
//!
//! This is the only module that touches `rusqlite`. The database runs in WAL mode
//! with one connection behind a mutex; callers on async tasks go through
//! [`Catalog::blocking`], which runs the work on a blocking thread. Each state change
//! is one transaction, so a crash leaves either the old state or the new one.
//!
//! The schema is versioned with `PRAGMA user_version`; [`migrations`] lists the steps,
//! applied in order at open. Everything here can be rebuilt from the store except what
//! only the catalog knows (job history and the activity log, added by the daemon).

mod activity;
mod backups;
mod chunks;
mod db;
mod drills;
mod error;
mod exports;
mod fleet;
mod jobs;
mod locks;
mod migrations;
mod queue;
mod records;
mod recovery;
mod schedules;
mod stats;

pub use backups::{CompletedBackup, NewBackup};
pub use chunks::ChunkLocation;
pub use db::Catalog;
pub use error::CatalogError;
pub use queue::{BackupName, QueueError, drill_schedule_key};
pub use records::{
    ActivityEntry, BackupRecord, DrillRecord, EnvState, JobCounts, JobKind, JobRecord, JobState,
    PartSize,
};
pub use recovery::PendingRollback;
pub use stats::{EnvStats, JobOutcomes};
