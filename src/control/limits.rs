//! How many connections the server holds, and for whom.
//!
//! One user's clients cannot lock out the others: each user may hold at most
//! [`PER_USER`] connections at once, and the users together leave [`ROOT_RESERVE`]
//! of the [`MAX_CONNECTIONS`] to root (and to the daemon's own user), who can always
//! reach a daemon that someone is flooding. A connection's place is taken when it is
//! accepted, before anything is read from it, and given back when it closes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Of those, kept for root and the daemon's own user.
pub const ROOT_RESERVE: usize = 16;
/// Connections one other user may hold at once.
pub const PER_USER: usize = 16;

#[derive(Default)]
struct Counts {
    total: usize,
    /// Connections of users other than root, by uid.
    users: HashMap<u32, usize>,
    users_total: usize,
}

/// The server's connection places.
#[derive(Clone, Default)]
pub struct Limits {
    counts: Arc<Mutex<Counts>>,
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("envsnapd is serving too many clients; try again")]
    Busy,
    #[error(
        "this user has {PER_USER} connections to envsnapd open already; close some and try again"
    )]
    UserBusy,
}

/// A connection's place, given back when dropped.
pub struct Place {
    counts: Arc<Mutex<Counts>>,
    user: Option<u32>,
}

impl Limits {
    /// Takes a place for a connection of `uid` (`unrestricted`: root or the daemon's
    /// own user), or says why there is none.
    pub fn take(&self, uid: u32, unrestricted: bool) -> Result<Place, Refused> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= MAX_CONNECTIONS {
            return Err(Refused::Busy);
        }
        if !unrestricted {
            if counts.users.get(&uid).copied().unwrap_or(0) >= PER_USER {
                return Err(Refused::UserBusy);
            }
            if counts.users_total >= MAX_CONNECTIONS - ROOT_RESERVE {
                return Err(Refused::Busy);
            }
            *counts.users.entry(uid).or_default() += 1;
            counts.users_total += 1;
        }
        counts.total += 1;
        Ok(Place {
            counts: self.counts.clone(),
            user: (!unrestricted).then_some(uid),
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total -= 1;
        if let Some(uid) = self.user {
            counts.users_total -= 1;
            if let Some(n) = counts.users.get_mut(&uid) {
                *n -= 1;
                if *n == 0 {
                    counts.users.remove(&uid);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_cannot_lock_out_others_or_root() {
        let limits = Limits::default();
        let flood: Vec<Place> = (0..PER_USER)
            .map(|_| limits.take(1000, false).unwrap())
            .collect();
        assert_eq!(limits.take(1000, false).err(), Some(Refused::UserBusy));
        // Other users fill what is left to users; root still gets in.
        let others: Vec<Place> = (0..MAX_CONNECTIONS - ROOT_RESERVE - PER_USER)
            .map(|i| limits.take(2000 + (i / PER_USER) as u32, false).unwrap())
            .collect();
        assert_eq!(limits.take(9999, false).err(), Some(Refused::Busy));
        let root: Vec<Place> = (0..ROOT_RESERVE)
            .map(|_| limits.take(0, true).unwrap())
            .collect();
        assert_eq!(limits.take(0, true).err(), Some(Refused::Busy));
        drop(flood);
        assert!(limits.take(1000, false).is_ok(), "places come back");
        drop((others, root));
    }
}
