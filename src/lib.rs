//! envsnap: a backup agent for Linux hosts.
//!
//! The map:
//!
//! - [`store`]: the object store (local directory, memory, S3, GCS, Azure) narrowed to
//!   one host's prefix.
//! - [`repo`]: the storage engine: chunking, packs, index, manifests, tree and stream
//!   parts, restore, tar export, verify, prune, rebuild. Its module doc is the design.
//! - [`catalog`]: the SQLite catalog: the chunk index, environments, backups, jobs
//!   and the activity log.
//! - [`config`]: the config file: schema, defaults, validation with exact errors.
//! - [`daemon`]: wiring and lifecycle of `envsnapd` (signals, systemd, reload).
//! - [`control`]: the socket protocol, the server (peer credentials, access), the client.
//! - [`api`]: what each control request does.
//! - [`download`]: one part of a backup as tar, tar.zst or its native dump.
//! - [`import`]: archives made elsewhere, checked entry by entry before they are stored.
//! - [`jobs`]: the persisted job queue and runner; one file per job kind.
//! - [`link`]: temporary signed URLs to exported parts, deleted when they expire.
//! - [`metrics`]: Prometheus metrics from the catalog, on an opt-in loopback listener.
//! - [`schedule`]: cron schedules → due backups, from persisted last runs.
//! - [`retention`]: which backups to prune (pure planning).
//! - [`sources`]: how each kind of part is read (database dumps).
//! - [`commands`]: running operators' commands (hooks, app stop/start).
//! - [`cli`]: `envsnapctl`'s presentation: tables, progress, prompts.
//!
//! Backup flow: `Repository::start_backup` → `add_tree` / `add_stream` per part →
//! `commit` (packs, then index object, then manifest). Restore flow:
//! `Repository::restore_tree` (plan, then execute through a staging directory) or
//! `Repository::read_stream`.

pub mod api;
pub mod catalog;
pub mod cli;
pub mod clock;

pub mod commands;
pub mod config;
pub mod context;
pub mod control;
pub mod daemon;
pub mod download;
pub mod import;
pub mod jobs;
pub mod link;
pub mod memory;
pub mod metrics;
pub mod repo;
pub mod retention;
pub mod schedule;
pub mod sources;
pub mod store;
