//! One trial: a fresh lab, one operation started, envsnapd killed with SIGKILL after
//! a delay drawn from the trial's seed ([`Kill`]), a restart, and the checks.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::checks::{self, Outcome};
use super::lab::{Lab, Rng};
use super::ops::{self, Op};

pub struct Trial {
    pub number: usize,
    pub seed: u64,
    pub op: Op,
    /// How long the operation takes here (measured); the kill comes within it.
    pub window: Duration,
    /// A delay to kill after instead of one drawn (to rerun a trial as it was).
    pub kill_after: Option<Duration>,
}

pub struct Report {
    pub trial: Trial,
    pub kill: Kill,
    /// `None` when the trial itself broke down (a panic, reported as a problem).
    pub outcome: Option<Outcome>,
    pub problems: Vec<String>,
}

/// When the daemon is killed: a delay counted from the request, or for half of the
/// restores from the moment `app.stop` ran (the environment starts changing), so
/// that the rollback after a kill mid-restore is tried as often as the rest.
#[derive(Debug, Clone, Copy)]
pub struct Kill {
    pub after: Duration,
    pub from_app_stop: bool,
}

impl std::fmt::Display for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let from = if self.from_app_stop {
            "app-stop"
        } else {
            "request"
        };
        write!(f, "kill_after_ms={} from={from}", self.after.as_millis())
    }
}

impl Trial {
    /// Draws the kill: anywhere in the operation or a little after its end; after
    /// `app.stop`, anywhere in what is left of a restore (about half of it).
    fn kill(&self) -> Kill {
        let mut rng = Rng::new(self.seed ^ 0xDE1A_7000);
        let from_app_stop = self.op == Op::Restore && rng.chance(50);
        let share = if from_app_stop { 0.6 } else { 1.2 };
        let span = self.window.mul_f64(share).as_millis() as u64;
        let drawn = Duration::from_millis(rng.below(span + 1));
        Kill {
            after: self.kill_after.unwrap_or(drawn),
            from_app_stop,
        }
    }

    pub fn run(self) -> Report {
        let kill = self.kill();
        println!(
            "crash trial {} seed={:#x} op={} {kill} window_ms={}",
            self.number,
            self.seed,
            self.op,
            self.window.as_millis()
        );
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| crash(&self, kill)));
        let (outcome, problems) = match result {
            Ok((outcome, problems)) => (Some(outcome), problems),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                (None, vec![format!("the trial panicked: {message}")])
            }
        };
        Report {
            trial: self,
            kill,
            outcome,
            problems,
        }
    }
}

fn crash(trial: &Trial, kill: Kill) -> (Outcome, Vec<String>) {
    let mut lab = Lab::new(trial.seed);
    let prepared = ops::prepare(&mut lab, trial.op);
    let mut started = Instant::now();
    let request = ops::start(&lab.daemon, &prepared.args);
    if kill.from_app_stop {
        wait_for_app_stop(&lab, trial.window * 3);
        started = Instant::now();
    }
    std::thread::sleep(kill.after.saturating_sub(started.elapsed()));
    assert_eq!(lab.daemon.signal_and_wait(Signal::SIGKILL), None);
    let request_ok = request.wait_with_output().unwrap().status.success();
    lab.daemon.spawn();
    let result = checks::after_restart(&lab.daemon, &prepared, request_ok);
    if !result.1.is_empty() {
        keep_for_inspection(lab);
    }
    result
}

/// Waits until `app.stop` has run (or `limit` passed: the restore may have failed
/// before it, which the checks then report).
fn wait_for_app_stop(lab: &Lab, limit: Duration) {
    let deadline = Instant::now() + limit;
    let hooks = lab.daemon.path("hooks.log");
    while Instant::now() < deadline {
        let log = std::fs::read_to_string(&hooks).unwrap_or_default();
        if log.lines().any(|line| line == "stop") {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// With `ENVSNAP_CRASH_KEEP=1`, the directories (daemon log, store, state,
/// environment) of the first few failed trials are kept and their paths printed.
fn keep_for_inspection(mut lab: Lab) {
    static KEPT: AtomicUsize = AtomicUsize::new(0);
    if std::env::var_os("ENVSNAP_CRASH_KEEP").is_none() || KEPT.fetch_add(1, Ordering::SeqCst) >= 3
    {
        return;
    }
    lab.daemon.dir.disable_cleanup(true);
    println!("crash kept {}", lab.daemon.dir.path().display());
}
