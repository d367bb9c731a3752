//! The randomized crash test (issue 12): envsnapd killed with SIGKILL at a random
//! moment of a random operation, many times, and checked after each restart.
//!
//! Each trial builds a fresh lab ([`lab`]: a daemon, an environment `live` of tens of
//! MB with app hooks, a backup `base`), prepares one operation ([`ops`]: backup,
//! restore with app hooks, prune of an expired backup, import of a tar archive,
//! backup delete), starts it, kills the daemon after a delay drawn within the time
//! the operation takes here (measured once per run before the trials; for half of
//! the restores counted from `app.stop`, so that kills mid-change are common), restarts
//! it, waits until no job is queued or running (a rollback may have been queued at
//! start-up) and checks ([`checks`]):
//!
//! - the operation's job ended as a crash explains (succeeded, or failed
//!   `interrupted`); after an interrupted restore that had changed the environment,
//!   one rollback job ran and succeeded, and no other job ran;
//! - the environment is `ready`, its app running, and its trees and database equal
//!   exactly ([`state`]) the state before the operation, or after a restore that
//!   completed, the restored backup's;
//! - a second prune finds nothing to do (the first may race the start-up prune);
//! - every listed backup is completed and `verify --read-data` finds no problem; a
//!   backup or import that did not complete is not listed, an expired backup whose
//!   prune was killed is gone, a deleted one is gone if the delete answered;
//! - no temporary file is left: `.envsnap-*` in the environment, `NAME#DIGITS` or
//!   lock objects in the store, anything in the state dir's `tmp/` or `drills/`;
//! - no panic in the daemon's log.
//!
//! Knobs (environment): `ENVSNAP_CRASH_TRIALS` (default 8; `benches/crash.sh` runs
//! 200), `ENVSNAP_CRASH_SEED` (decimal or 0x hex; default random, printed),
//! `ENVSNAP_CRASH_OPS` (comma-separated operations to draw from; default all),
//! `ENVSNAP_CRASH_KEEP=1` (keep the directories of the first failed trials),
//! `ENVSNAP_CRASH_KILL_AFTER_MS` (kill after this delay instead of a drawn one).
//! Trial N's seed is the run's seed plus N, and its operations come in rounds that
//! hold each operation once, in a random order. To rerun one trial, pass its printed
//! seed and delay: `ENVSNAP_CRASH_SEED=<seed> ENVSNAP_CRASH_TRIALS=1
//! ENVSNAP_CRASH_OPS=<op> ENVSNAP_CRASH_KILL_AFTER_MS=<ms>`, which makes the same
//! files and kills at the same delay (where in the operation that falls still
//! depends on the machine's speed and load).
//!
//! A trial that finds problems does not stop the run: every trial prints one
//! `crash result` line, and the test fails at the end with the list.

mod checks;
mod lab;
mod ops;
mod state;
mod trial;

use std::collections::BTreeMap;
use std::time::Duration;

use lab::Rng;
use ops::Op;
use trial::{Report, Trial};

/// Trials when `ENVSNAP_CRASH_TRIALS` is unset: a run under a minute on 2 cores.
const DEFAULT_TRIALS: usize = 8;
/// The least time a kill is spread over: prune and delete take 50-400 ms here
/// depending on how much the seed's data gives them to repack.
const MIN_WINDOW: Duration = Duration::from_millis(250);

struct Settings {
    trials: usize,
    seed: u64,
    ops: Vec<Op>,
    kill_after: Option<Duration>,
}

impl Settings {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let trials = var("ENVSNAP_CRASH_TRIALS").map_or(DEFAULT_TRIALS, |v| {
            v.trim().parse().expect("ENVSNAP_CRASH_TRIALS is a number")
        });
        let seed = var("ENVSNAP_CRASH_SEED").map_or_else(random_seed, |v| {
            let v = v.trim();
            match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            }
            .expect("ENVSNAP_CRASH_SEED is a number (decimal or 0x hex)")
        });
        let ops = var("ENVSNAP_CRASH_OPS").map_or(Op::ALL.to_vec(), |v| {
            v.split(',')
                .map(|name| {
                    Op::parse(name.trim()).unwrap_or_else(|| panic!("unknown operation {name}"))
                })
                .collect()
        });
        let kill_after = var("ENVSNAP_CRASH_KILL_AFTER_MS").map(|v| {
            Duration::from_millis(
                v.trim()
                    .parse()
                    .expect("ENVSNAP_CRASH_KILL_AFTER_MS is a number"),
            )
        });
        Settings {
            trials,
            seed,
            ops,
            kill_after,
        }
    }

    /// Each trial's operation and seed: rounds holding every operation once, shuffled.
    fn plan(&self) -> Vec<(Op, u64)> {
        let mut rng = Rng::new(self.seed);
        let mut plan = Vec::new();
        while plan.len() < self.trials {
            let mut round = self.ops.clone();
            for i in (1..round.len()).rev() {
                round.swap(i, rng.below(i as u64 + 1) as usize);
            }
            plan.extend(round);
        }
        plan.truncate(self.trials);
        (0..)
            .zip(plan)
            .map(|(n, op)| (op, self.seed.wrapping_add(n)))
            .collect()
    }
}

fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap();
    u64::from_le_bytes(bytes)
}

#[test]
fn kill_9_at_random_moments_leaves_nothing_half_done() {
    let settings = Settings::from_env();
    let names: Vec<&str> = settings.ops.iter().map(|op| op.name()).collect();
    println!(
        "crash run seed={:#x} trials={} ops={}",
        settings.seed,
        settings.trials,
        names.join(",")
    );
    let took = ops::calibrate(settings.seed ^ 0xCA11_B8A7E);
    for (op, took) in &took {
        println!("crash calibrated op={op} took_ms={}", took.as_millis());
    }
    let reports: Vec<Report> = (1..)
        .zip(settings.plan())
        .map(|(number, (op, seed))| {
            let report = Trial {
                number,
                seed,
                op,
                window: took[&op].max(MIN_WINDOW),
                kill_after: settings.kill_after,
            }
            .run();
            print_result(&report);
            report
        })
        .collect();
    let failures = summarize(&settings, &reports);
    assert!(
        failures.is_empty(),
        "{} of {} crash trials failed (seed {:#x}):\n{}",
        failures.len(),
        reports.len(),
        settings.seed,
        failures.join("\n")
    );
}

fn print_result(report: &Report) {
    let outcome = report.outcome.map_or("broken", |o| o.label());
    let verdict = match report.problems.is_empty() {
        true => "ok".to_owned(),
        false => format!("FAILED: {}", report.problems.join(" | ")),
    };
    println!(
        "crash result trial={} seed={:#x} op={} {} outcome={outcome} {verdict}",
        report.trial.number, report.trial.seed, report.trial.op, report.kill
    );
}

/// Prints per operation how the trials ended; returns one line per failed trial.
fn summarize(settings: &Settings, reports: &[Report]) -> Vec<String> {
    let mut by_op: BTreeMap<Op, BTreeMap<&str, usize>> = BTreeMap::new();
    let mut failures = Vec::new();
    for report in reports {
        let counts = by_op.entry(report.trial.op).or_default();
        *counts.entry("trials").or_default() += 1;
        *counts
            .entry(report.outcome.map_or("broken", |o| o.label()))
            .or_default() += 1;
        if !report.problems.is_empty() {
            *counts.entry("failed").or_default() += 1;
            failures.push(format!(
                "trial {} (seed {:#x}, {}, {}): {}",
                report.trial.number,
                report.trial.seed,
                report.trial.op,
                report.kill,
                report.problems.join(" | ")
            ));
        }
    }
    for (op, counts) in &by_op {
        let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("crash summary op={op} {}", counts.join(" "));
    }
    println!(
        "crash total seed={:#x} trials={} failed={}",
        settings.seed,
        reports.len(),
        failures.len()
    );
    failures
}
