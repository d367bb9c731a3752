//! envsnap: a backup agent for Linux hosts.
//!
//! The map:
//!
//! - [`store`]: the object store (local directory, memory, S3, GCS, Azure) narrowed to
//!   one host's prefix.
//! - [`repo`]: the storage engine: chunking, packs, index, manifests, tree and stream
//!   parts, restore, tar export, verify, prune, rebuild. Its module doc is the design.
//! - [`catalog`]: the SQLite catalog: the chunk index (and, as the daemon grows,
//!   environments, backups, jobs and the activity log).
//!
//! Backup flow: `Repository::start_backup` → `add_tree` / `add_stream` per part →
//! `commit` (packs, then index object, then manifest). Restore flow:
//! `Repository::restore_tree` (plan, then execute through a staging directory) or
//! `Repository::read_stream`.

pub mod catalog;
pub mod repo;
pub mod store;
