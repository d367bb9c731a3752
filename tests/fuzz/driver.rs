//! The fuzz driver: runs one target over its kept corpus, then over mutations of it,
//! for a number of inputs or a time, and fails naming the first input that breaks it.
//!
//! An input breaks a target when the target panics (a decoder bug, or one of the
//! target's own checks), when one allocation exceeds the target's allowance for an
//! input of that size ([`super::alloc`]), or when one input runs longer than the
//! target's time limit (a hang; the stuck thread is left behind and the test fails).
//! The input is written to `fuzz/crashes/<target>/<hash>` and the failure says how
//! to replay it.
//!
//! Without coverage feedback, the driver keeps what it can see: an input whose
//! outcome (the decoder's result or error, digits masked) is new joins the working
//! corpus for the rest of the run, so inputs that get further through a decoder
//! become parents of the next ones.
//!
//! Settings, from the environment:
//! - `ENVSNAP_FUZZ_SECONDS`: run each target for this long (a long run; the seed is
//!   random unless given). Unset: a short run of `ENVSNAP_FUZZ_INPUTS` inputs
//!   (default 2000), at most 3 seconds, with a seed fixed per target.
//! - `ENVSNAP_FUZZ_SEED`: the mutator's seed.
//! - `ENVSNAP_FUZZ_REPLAY`: a file to run alone through the target (a crash).

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::alloc::Guard;
use super::mutate::{Rng, mutate};

/// What a target made of an input: a short description of the result or the error
/// (inputs with a new one join the working corpus). Panics are failures.
pub type Outcome = Result<String, String>;

pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]) -> Outcome,
    /// Words the mutator inserts: keywords, field names, magic numbers.
    pub dictionary: &'static [&'static [u8]],
    /// Mutated inputs are cut to this length.
    pub max_len: usize,
    /// The largest single allocation allowed, beyond 64 bytes per input byte.
    pub allocation: usize,
    /// An input running longer than this is a hang.
    pub time_limit: Duration,
}

/// The defaults most targets take.
pub const DEFAULT_ALLOCATION: usize = 2 << 20;
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(10);
/// The working corpus grows to at most this many inputs.
const MAX_POOL: usize = 2000;
/// Outcomes remembered, at most (a long run's memory stays bounded).
const MAX_OUTCOMES: usize = 100_000;

struct Settings {
    seconds: Option<f64>,
    inputs: u64,
    seed: u64,
    replay: Option<PathBuf>,
}

impl Settings {
    fn from_env(name: &str) -> Self {
        let var = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
        let seconds = var("ENVSNAP_FUZZ_SECONDS").map(|s| s.parse().expect("seconds"));
        let seed = var("ENVSNAP_FUZZ_SEED")
            .map(|s| s.parse().expect("a number"))
            .unwrap_or_else(|| match seconds {
                Some(_) => random_seed(),
                None => u64::from_le_bytes(
                    blake3::hash(name.as_bytes()).as_bytes()[..8]
                        .try_into()
                        .unwrap(),
                ),
            });
        Settings {
            seconds,
            inputs: var("ENVSNAP_FUZZ_INPUTS").map_or(2000, |s| s.parse().expect("a count")),
            seed,
            replay: var("ENVSNAP_FUZZ_REPLAY").map(PathBuf::from),
        }
    }

    fn done(&self, inputs: u64, elapsed: Duration) -> bool {
        match self.seconds {
            Some(seconds) => elapsed.as_secs_f64() >= seconds,
            None => inputs >= self.inputs || elapsed >= Duration::from_secs(3),
        }
    }
}

fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("random seed");
    u64::from_le_bytes(bytes)
}

/// How a run ended.
enum Report {
    Finished(Stats),
    Failed { input: Vec<u8>, reason: String },
}

struct Stats {
    inputs: u64,
    corpus: usize,
    outcomes: usize,
}

/// What the watchdog sees of the worker.
#[derive(Default)]
struct Progress {
    finished_inputs: AtomicU64,
    current: Mutex<Vec<u8>>,
}

/// Runs `target` as the settings say; panics naming the input that broke it.
pub fn fuzz(target: &'static Target) {
    let settings = Settings::from_env(target.name);
    let corpus = match &settings.replay {
        Some(path) => vec![std::fs::read(path).expect("the replayed input")],
        None => load_corpus(target.name),
    };
    assert!(
        !corpus.is_empty(),
        "no corpus in {}",
        corpus_dir(target.name).display()
    );
    let corpus_len = corpus.len();
    let seed = settings.seed;
    let progress = Arc::new(Progress::default());
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    let worker_progress = progress.clone();
    let mutating = settings.replay.is_none();
    std::thread::Builder::new()
        .name(format!("fuzz-{}", target.name))
        .spawn(move || {
            let report = work(target, &settings, corpus, mutating, &worker_progress);
            let _ = tx.send(report);
        })
        .expect("a worker thread");
    let report = watch(target, &rx, &progress);
    match report {
        Report::Finished(stats) => eprintln!(
            "fuzz {}: {} inputs in {:.1}s ({} corpus files, {} in the working corpus, {} distinct outcomes, seed {seed}), 0 failures",
            target.name,
            stats.inputs,
            started.elapsed().as_secs_f64(),
            corpus_len,
            stats.corpus,
            stats.outcomes
        ),
        Report::Failed { input, reason } => {
            let inputs = progress.finished_inputs.load(Ordering::Relaxed);
            let path = keep_crash(target.name, &input);
            panic!(
                "fuzz {}: 1 failure after {inputs} inputs (seed {seed}): {reason}\n  input: {}\n  replay: ENVSNAP_FUZZ_REPLAY={} cargo test --test integration fuzz::{} -- --exact",
                target.name,
                path.display(),
                path.display(),
                target.name
            );
        }
    }
}

/// Waits for the worker's report; an input that runs past the time limit is a hang.
fn watch(target: &Target, rx: &mpsc::Receiver<Report>, progress: &Progress) -> Report {
    let mut last = (0, Instant::now());
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(report) => return report,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("fuzz {}: the worker thread died", target.name)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let finished = progress.finished_inputs.load(Ordering::Relaxed);
        if finished != last.0 {
            last = (finished, Instant::now());
        } else if last.1.elapsed() > target.time_limit {
            return Report::Failed {
                input: progress.current.lock().unwrap().clone(),
                reason: format!("an input ran for more than {:?}", target.time_limit),
            };
        }
    }
}

/// The worker: the corpus first, then mutations until the budget is spent.
fn work(
    target: &'static Target,
    settings: &Settings,
    corpus: Vec<Vec<u8>>,
    mutating: bool,
    progress: &Progress,
) -> Report {
    let guard = Guard::leak();
    guard.watch_this_thread();
    let started = Instant::now();
    let mut outcomes = HashSet::new();
    let mut rng = Rng::new(settings.seed);
    let mut pool = corpus.clone();
    let mut inputs = 0u64;
    let mut next = corpus.into_iter();
    loop {
        let input = match next.next() {
            Some(input) => input,
            None if !mutating || settings.done(inputs, started.elapsed()) => break,
            None => {
                let parent = &pool[rng.below(pool.len())];
                let other = &pool[rng.below(pool.len())];
                mutate(&mut rng, parent, other, target.dictionary, target.max_len)
            }
        };
        *progress.current.lock().unwrap() = input.clone();
        let outcome = match run_one(target, guard, &input) {
            Ok(outcome) => outcome,
            Err(reason) => return Report::Failed { input, reason },
        };
        inputs += 1;
        progress.finished_inputs.store(inputs, Ordering::Relaxed);
        let signature = signature(&outcome);
        if std::env::var_os("ENVSNAP_FUZZ_DEBUG_OUTCOMES").is_some()
            && !outcomes.contains(&signature)
        {
            eprintln!("new outcome: {signature}");
        }
        if outcomes.len() < MAX_OUTCOMES && outcomes.insert(signature) && pool.len() < MAX_POOL {
            pool.push(input);
        }
    }
    Report::Finished(Stats {
        inputs,
        corpus: pool.len(),
        outcomes: outcomes.len(),
    })
}

/// Runs one input: its outcome, or why it broke the target.
fn run_one(target: &Target, guard: &Guard, input: &[u8]) -> Result<Outcome, String> {
    guard.set_limit(target.allocation + 64 * input.len());
    let result = catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    guard.set_limit(usize::MAX);
    let excess = guard.take_excess();
    let outcome = result.map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        format!("panicked: {message}")
    })?;
    match excess {
        Some(size) => Err(format!(
            "one allocation of {size} bytes for an input of {} bytes (allowed: {})",
            input.len(),
            target.allocation + 64 * input.len()
        )),
        None => Ok(outcome),
    }
}

/// The outcome with digits and quoted text masked, cut short: what tells outcomes
/// apart (an error quoting the input would make every input look new).
fn signature(outcome: &Outcome) -> String {
    let text = match outcome {
        Ok(text) => format!("ok {text}"),
        Err(text) => format!("err {text}"),
    };
    let mut masked = String::new();
    let mut quote = None;
    let mut escaped = false;
    for c in text.chars() {
        match (quote, c) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(open), c) if c == open => quote = None,
            (Some(_), _) => {}
            (None, '"' | '`' | '\'') => {
                quote = Some(c);
                masked.push_str("<q>");
            }
            (None, c) if c.is_ascii_digit() && masked.ends_with('#') => {}
            (None, c) if c.is_ascii_digit() => masked.push('#'),
            (None, c) => masked.push(c),
        }
    }
    // Ids (`ffcbdd#bab#`) are masked as numbers are.
    let is_hex_id =
        |word: &str| word.len() >= 6 && word.chars().all(|c| c == '#' || c.is_ascii_hexdigit());
    let masked: Vec<&str> = masked
        .split(' ')
        .map(|word| if is_hex_id(word) { "#" } else { word })
        .collect();
    masked.join(" ").chars().take(150).collect()
}

pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

pub fn corpus_dir(name: &str) -> PathBuf {
    fuzz_dir().join("corpus").join(name)
}

/// The kept corpus of a target, in name order.
fn load_corpus(name: &str) -> Vec<Vec<u8>> {
    let Ok(listing) = std::fs::read_dir(corpus_dir(name)) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = listing.map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths
        .iter()
        .filter(|p| p.is_file())
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// Writes a failing input under `fuzz/crashes/<target>/` and returns its path.
fn keep_crash(name: &str, input: &[u8]) -> PathBuf {
    let dir = fuzz_dir().join("crashes").join(name);
    std::fs::create_dir_all(&dir).expect("the crashes directory");
    let path = dir.join(&blake3::hash(input).to_hex()[..16]);
    std::fs::write(&path, input).expect("the crash input");
    path
}

/// An error message without what it quotes: only its words of lowercase letters (a
/// tar error names entries; their names would make every outcome a new one).
pub fn coarse(text: &str) -> String {
    text.split_whitespace()
        .filter(|word| {
            word.chars()
                .all(|c| c.is_ascii_lowercase() || "(),:".contains(c))
        })
        .collect::<Vec<_>>()
        .join(" ")
}
