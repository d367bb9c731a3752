//! One trial: a fresh lab, one operation started, envsnapd killed with SIGKILL after
//! a delay drawn from the trial's seed, a restart, and the checks.

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
}

pub struct Report {
    pub trial: Trial,
    pub delay: Duration,
    /// `None` when the trial itself broke down (a panic, reported as a problem).
    pub outcome: Option<Outcome>,
    pub problems: Vec<String>,
}

impl Trial {
    /// Draws the kill delay: anywhere in the operation, or a little after its end.
    fn delay(&self) -> Duration {
        let span = self.window.mul_f64(1.2).as_millis() as u64;
        Duration::from_millis(Rng::new(self.seed ^ 0xDE1A_7000).below(span + 1))
    }

    pub fn run(self) -> Report {
        let delay = self.delay();
        println!(
            "crash trial {} seed={:#x} op={} kill_after_ms={} window_ms={}",
            self.number,
            self.seed,
            self.op,
            delay.as_millis(),
            self.window.as_millis()
        );
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| crash(&self, delay)));
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
            delay,
            outcome,
            problems,
        }
    }
}

fn crash(trial: &Trial, delay: Duration) -> (Outcome, Vec<String>) {
    let mut lab = Lab::new(trial.seed);
    let prepared = ops::prepare(&mut lab, trial.op);
    let started = Instant::now();
    let request = ops::start(&lab.daemon, &prepared.args);
    std::thread::sleep(delay.saturating_sub(started.elapsed()));
    assert_eq!(lab.daemon.signal_and_wait(Signal::SIGKILL), None);
    let request_ok = request.wait_with_output().unwrap().status.success();
    lab.daemon.spawn();
    let result = checks::after_restart(&lab.daemon, &prepared, request_ok);
    if !result.1.is_empty() {
        keep_for_inspection(lab);
    }
    result
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
