//! envsnap: a backup agent for Linux hosts.
//!
//! The map, from the top (the layers, and where new code goes:
//! `docs/architecture.md`):
//!
//! - [`daemon`]: wiring and lifecycle of `envsnapd` (signals, systemd, reload); only
//!   the binary imports it.
//! - [`api`]: what each control request means and does, one module per area, with
//!   the access decisions.
//! - [`control`]: the socket protocol, the transport-only server (peer credentials,
//!   passed descriptors), the client.
//! - [`cli`]: `envsnapctl`'s presentation: tables, progress, prompts.
//! - [`jobs`]: the runner loop, one module per job kind, prune, the scheduler loop.
//! - [`link`]: temporary signed URLs to exported parts, deleted when they expire.
//! - [`metrics`]: Prometheus metrics from the catalog, on an opt-in loopback listener.
//! - [`context`]: the state the handlers and jobs share.
//! - [`clock`]: the time, injectable.
//! - [`download`]: one part of a backup as tar, tar.zst or its native dump.
//! - [`drill`]: restore drills: the sandbox, the report and its warnings.
//! - [`fleet`]: every host of a shared store, from status objects and manifests alone.
//! - [`import`]: archives made elsewhere, checked entry by entry before they are stored.
//! - [`sources`]: how each kind of part is read (database dumps).
//! - [`commands`]: running operators' commands (hooks, app stop/start).
//! - [`schedule`]: cron schedules → due backups (pure).
//! - [`retention`]: which backups to prune (pure planning).
//! - [`repo`]: the storage engine: chunking, packs, index, manifests, tree and stream
//!   parts, restore, tar export, verify, prune, rebuild. Its module doc is the design.
//! - [`catalog`]: the SQLite catalog: the chunk index, environments, backups, jobs
//!   and the activity log.
//! - [`store`]: the object store (local directory, memory, S3, GCS, Azure) narrowed to
//!   one host's prefix.
//! - [`config`]: the config file: schema, defaults, validation with exact errors.
//! - [`message`]: messages for people kept to one printable line.
//! - [`memory`]: allocator tuning, and freed memory handed back to the system.
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
pub mod drill;
pub mod fleet;
pub mod import;
pub mod jobs;
pub mod link;
pub mod memory;
pub mod message;
pub mod metrics;
pub mod repo;
pub mod retention;
pub mod schedule;
pub mod sources;
pub mod store;
