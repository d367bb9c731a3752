//! The daemon's configuration: schema, defaults, `ENVSNAP_*` overrides, validation.
//!
//! A config is read in four steps, each failing with one line that names the file
//! (or the environment variable), the dotted key and the problem:
//!
//! 1. the TOML text is parsed (syntax errors carry the line number);
//! 2. `ENVSNAP_*` variables are mapped onto keys ([`overrides`]) and merged over the
//!    file with the `config` crate;
//! 3. the merged tree is deserialized strictly (unknown keys and wrong types are
//!    errors) into the raw shape ([`raw`]), with `serde_path_to_error` giving the key;
//! 4. every value is checked and defaults are filled in ([`validate`]), giving the
//!    types of `schema.rs`, which hold only valid values: schedules are normalized
//!    6-field cron, durations are `Duration`s, paths that must be absolute are.
//!
//! Nothing outside the config is touched while loading except `password_file`s, whose
//! existence and permissions are checked (a world-readable password file is refused).
//! Version files and commands are read later, by [`VersionSource::read`]. A failed
//! load changes nothing, so a reload with a broken file keeps the old config.
//!
//! The types are in `schema.rs`, the refusal in `error.rs`, reading a file in
//! `load.rs` and what a file leaves out in `defaults.rs`; this module only
//! re-exports them.
//!
//! `docs/config.md` documents every key for operators.

mod access;
mod defaults;
mod error;
mod live;
mod load;
mod origin;
mod overrides;
mod raw;
mod schema;
mod validate;
mod validate_db;
mod validate_store;
mod values;
mod version;

pub use access::{AccessRules, Action, Principal};
pub use defaults::{EMBEDDED_DEFAULT, default_state_dir};
pub use error::{ConfigError, ConfigOrigin};
pub use live::LiveConfig;
pub use schema::{
    AppConfig, Config, DaemonConfig, DatabaseConfig, DatabaseKind, DrillConfig, EnvConfig,
    FleetConfig, ImportConfig, MountConfig, OnInterrupt, PartSource, PartSpec, RestoreConfig,
    StoreConfig,
};
pub use values::{normalize_cron, parse_duration, parse_size};
pub use version::VersionSource;

#[cfg(test)]
mod tests;
