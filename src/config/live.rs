//! The config in force: read by every request and job, replaced whole on reload.
//!
//! Readers take an `Arc<Config>` snapshot and keep it for the length of what they do,
//! so a reload in the middle of a backup never mixes two configs in one job. A reload
//! swaps the pointer; a poisoned lock is still usable (the value behind it is an
//! immutable `Arc`, never half written).

use std::sync::{Arc, RwLock};

use super::schema::Config;

/// A shared handle on the config in force; cheap to clone.
#[derive(Clone)]
pub struct LiveConfig(Arc<RwLock<Arc<Config>>>);

impl LiveConfig {
    pub fn new(config: Config) -> Self {
        LiveConfig(Arc::new(RwLock::new(Arc::new(config))))
    }

    /// The config as it is now.
    pub fn get(&self) -> Arc<Config> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, fresh: Arc<Config>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }
}

impl std::fmt::Debug for LiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveConfig")
    }
}
