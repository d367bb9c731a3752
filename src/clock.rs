//! Time, injectable: what the scheduler, retention and the request handlers call "now".
//!
//! The daemon runs on [`Clock::system`]. Tests build a context on
//! [`Clock::manual`] and move time themselves ([`ManualClock::advance`]), so a
//! schedule that is due tomorrow, or a backup that expires next week, is a test
//! step rather than a wait. Only wall-clock readings go through here; sleeps and
//! timeouts stay on tokio's timer (which tests pause with `tokio::time::pause`).

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// A source of the current time; cheap to clone.
#[derive(Clone)]
pub struct Clock(Source);

#[derive(Clone)]
enum Source {
    System,
    Manual(Arc<Mutex<DateTime<Utc>>>),
}

/// A clock that stands still until moved.
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl Clock {
    pub fn system() -> Self {
        Clock(Source::System)
    }

    /// A clock at `start` that only `ManualClock` moves.
    pub fn manual(start: DateTime<Utc>) -> (Self, ManualClock) {
        let time = Arc::new(Mutex::new(start));
        (Clock(Source::Manual(time.clone())), ManualClock(time))
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            Source::System => Utc::now(),
            Source::Manual(time) => *time.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Source::System => f.write_str("Clock::system"),
            Source::Manual(_) => write!(f, "Clock::manual({})", self.now()),
        }
    }
}

impl ManualClock {
    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let start = DateTime::parse_from_rfc3339("2026-12-01T03:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let (clock, hand) = Clock::manual(start);
        assert_eq!(clock.now(), start);
        hand.advance(chrono::Duration::days(1));
        assert_eq!(clock.now(), start + chrono::Duration::days(1));
        assert!(Clock::system().now() > start - chrono::Duration::days(3650));
    }
}
