//! The fleet: every host sharing a store, seen from the store alone.
//!
//! Each daemon writes its status object (heartbeat, [`status`]) under its own prefix
//! on start-up, after every job and every `fleet.heartbeat`: its environments, their
//! schedules, last backup, last failure and last drill. Any host, with the store's
//! key, reads every host's status and manifest listing ([`view`]) and judges each
//! host and environment ([`stale`]): no server to run, no other host's catalog to
//! reach, so a host that is down is seen exactly as its last word and its backups
//! left it. The manifests are listed, not read: a backup a host made after its last
//! heartbeat still counts.
//!
//! The service layer writes the heartbeat and watches the fleet (`jobs/fleet.rs`),
//! answers `fleet` requests (`api/fleet.rs`) and exports the metrics (`metrics.rs`).

pub mod stale;
pub mod status;
pub mod view;
