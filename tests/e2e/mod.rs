//! End to end: the real `envsnapd` and `envsnapctl` over a real socket in a temp
//! directory, with real database servers, a real S3-compatible server and the Azure
//! Blob Storage emulator.

mod azure_e2e;
mod crash_e2e;
mod daemon_e2e;
mod databases_e2e;
mod download_e2e;
mod drill_e2e;
mod fleet_e2e;
mod import_e2e;
mod limits_e2e;
mod link_e2e;
mod lock_e2e;
mod metrics_e2e;
mod objstore_e2e;
mod restore_e2e;
mod schedule_e2e;
