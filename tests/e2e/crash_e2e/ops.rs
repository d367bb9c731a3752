//! The operations a trial interrupts, what each needs beforehand, and how long each
//! takes here (measured once per run, so that kills land inside them).
//!
//! | operation | set-up after `base` | request |
//! | --- | --- | --- |
//! | backup | churn | `backup create live --name crash` |
//! | restore | churn (the safety backup and the restore both have work) | `restore live base --yes` |
//! | prune | churn, backup `newer`, `base` expires | `prune` |
//! | import | a ~20 MB code archive | `import live --part code=ARCHIVE --name imported` |
//! | delete | churn, backup `newer` | `backup delete live base --yes` |

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::lab::Lab;
use super::state::EnvState;
use crate::support::daemon::TestDaemon;

/// Shares of media files a churn rewrites.
const SOME: u64 = 45;
const MOST: u64 = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Backup,
    Restore,
    Prune,
    Import,
    Delete,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Backup, Op::Restore, Op::Prune, Op::Import, Op::Delete];

    pub fn name(self) -> &'static str {
        match self {
            Op::Backup => "backup",
            Op::Restore => "restore",
            Op::Prune => "prune",
            Op::Import => "import",
            Op::Delete => "delete",
        }
    }

    pub fn parse(text: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == text)
    }

    /// The request's command as the daemon logs it (`command="prune"`).
    pub fn command(self) -> &'static str {
        match self {
            Op::Backup => "backup-create",
            Op::Restore => "restore",
            Op::Prune => "prune",
            Op::Import => "import",
            Op::Delete => "backup-delete",
        }
    }

    /// The job kind the request queues; prune and delete run inside the request.
    pub fn job_kind(self) -> Option<&'static str> {
        match self {
            Op::Backup => Some("backup"),
            Op::Restore => Some("restore"),
            Op::Import => Some("import"),
            Op::Prune | Op::Delete => None,
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An operation ready to start, with what the checks after the crash compare with.
pub struct Prepared {
    pub op: Op,
    /// envsnapctl's arguments (`--json` first).
    pub args: Vec<String>,
    /// The environment just before the operation.
    pub before: EnvState,
    /// For a restore: the environment the backup holds.
    pub restored: Option<EnvState>,
    /// The backup the operation makes (backup, import) or removes (prune, delete).
    pub backup: Option<String>,
    /// The newest job id before the operation: later ones are the operation's own
    /// and what the restart queued.
    pub last_job: i64,
    /// The daemon log's length before the operation: the request's line comes later.
    pub log_offset: usize,
}

/// Makes what `op` needs in `lab` and returns it ready to start.
pub fn prepare(lab: &mut Lab, op: Op) -> Prepared {
    let mut restored = None;
    let (args, backup): (Vec<String>, Option<String>) = match op {
        Op::Backup => {
            lab.churn(SOME);
            let name = lab.name("crash");
            (
                words(&["backup", "create", "live", "--name", &name]),
                Some(name),
            )
        }
        Op::Restore => {
            lab.churn(SOME);
            restored = Some(lab.base_state.clone());
            (
                words(&["restore", "live", &lab.base.clone(), "--yes"]),
                None,
            )
        }
        Op::Prune => {
            let old = replace_base(lab);
            lab.daemon
                .json(&["backup", "keep", "live", &old, "--until", "1s"]);
            std::thread::sleep(Duration::from_millis(1100));
            (words(&["prune"]), Some(old))
        }
        Op::Import => {
            let archive = lab.code_archive();
            let name = lab.name("imported");
            let part = format!("code={}", archive.display());
            let args = words(&["import", "live", "--part", &part, "--name", &name]);
            (args, Some(name))
        }
        Op::Delete => {
            let old = replace_base(lab);
            (
                words(&["backup", "delete", "live", &old, "--yes"]),
                Some(old),
            )
        }
    };
    let mut all = words(&["--json"]);
    all.extend(args);
    Prepared {
        op,
        args: all,
        before: lab.state(),
        restored,
        backup,
        last_job: last_job(&lab.daemon),
        log_offset: lab.daemon.log().len(),
    }
}

/// Churns and backs up a newer backup, which becomes the lab's base; returns the old
/// one. Most media files change, so that the old backup's packs are mostly garbage
/// and removing it repacks them.
fn replace_base(lab: &mut Lab) -> String {
    lab.churn(MOST);
    let newer = lab.backup("newer");
    let old = std::mem::replace(&mut lab.base, newer);
    lab.base_state = lab.state();
    old
}

fn words(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

pub fn last_job(daemon: &TestDaemon) -> i64 {
    daemon
        .json(&["job", "list"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["id"].as_i64())
        .max()
        .unwrap_or(0)
}

/// Starts envsnapctl with `args`; the caller kills the daemon under it.
pub fn start(daemon: &TestDaemon, args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_envsnapctl"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// How long each operation takes on this machine: one lab, each operation prepared
/// and run to its end in turn (the jobs with `--wait`).
pub fn calibrate(seed: u64) -> BTreeMap<Op, Duration> {
    let mut lab = Lab::new(seed);
    let mut took = BTreeMap::new();
    for op in [Op::Backup, Op::Import, Op::Restore, Op::Delete, Op::Prune] {
        let mut prepared = prepare(&mut lab, op);
        if op.job_kind().is_some() {
            prepared.args.push("--wait".to_owned());
        }
        let started = Instant::now();
        let out = start(&lab.daemon, &prepared.args)
            .wait_with_output()
            .unwrap();
        took.insert(op, started.elapsed());
        assert!(
            out.status.success(),
            "{op} failed without a crash: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    took
}
