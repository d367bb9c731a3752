//! What a [`Store`](super::Store) with Object Lock carries: the policy from
//! `[store] lock`, the bucket's lock requests, and the retention a clone's puts
//! carry. The operations are in `locking.rs`.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::object_lock::{LockMode, S3Lock};

/// `[store] lock`: how objects are locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockPolicy {
    pub mode: LockMode,
    /// How much longer than the backup that needs it an object stays locked.
    pub extra: Duration,
}

/// A bucket with Object Lock, and the policy envsnap applies to it.
pub(super) struct Locking {
    pub api: S3Lock,
    pub policy: LockPolicy,
}

/// The retention a clone's puts carry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retain {
    pub until: DateTime<Utc>,
    pub hold: bool,
}
