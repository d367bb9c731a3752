//! Timings per phase of a backup or a prune, logged at debug level
//! (`ENVSNAP_LOG=envsnap=debug`), so where a job's time goes is measured where it is
//! spent rather than guessed from outside. `benches/history.sh` reads them to show
//! which phase, if any, grows as backups accumulate.
//!
//! Each line names the operation, the phase and its duration in milliseconds:
//! `phase operation="backup" phase="parent" ms=1.8`; the last line of an operation
//! has `phase="total"`.

use std::time::Instant;

/// Times the consecutive phases of one operation.
pub struct PhaseTimer {
    operation: &'static str,
    started: Instant,
    last: Instant,
}

impl PhaseTimer {
    pub fn start(operation: &'static str) -> Self {
        let now = Instant::now();
        PhaseTimer {
            operation,
            started: now,
            last: now,
        }
    }

    /// Ends the phase running since the previous lap (or the start), named `phase`.
    pub fn lap(&mut self, phase: &str) {
        let now = Instant::now();
        log(self.operation, phase, now - self.last);
        self.last = now;
    }

    /// Logs the whole operation's duration.
    pub fn finish(self) {
        log(self.operation, "total", self.started.elapsed());
    }
}

fn log(operation: &str, phase: &str, took: std::time::Duration) {
    let ms = (took.as_secs_f64() * 1e4).round() / 10.0;
    tracing::debug!(operation, phase, ms, "phase");
}
