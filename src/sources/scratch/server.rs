//! A scratch server's process: started in its own process group, killed with its
//! children when the drill ends, and never outliving the daemon.
//!
//! A server starts with an empty environment (no store credentials), in a network
//! namespace of its own where allowed, with no way to gain privileges.
//!
//! Three things make sure no scratch server survives: the drill stops it (SIGKILL
//! to its process group: its data is disposable); the kernel kills it if the daemon
//! dies (`PR_SET_PDEATHSIG`, set after dropping privileges since a change of user
//! clears it; PostgreSQL's backends exit when their postmaster is gone); and a pid
//! file in the server's directory (pid and process start time, so a reused pid is
//! never killed) lets the next start-up kill what is left ([`sweep`]).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Gid, Pid, Uid};
use tokio::process::{Child, Command};

use std::time::Duration;

use super::super::error::DatabaseError;
use super::super::tool::ToolError;

/// The file in a server's directory that names its process.
const PID_FILE: &str = "envsnap-server.pid";

/// Who a server runs as, and the directory it reaches through descriptor 3.
pub(super) struct Launch<'a> {
    pub tool: &'a str,
    /// Drop to this user and group (PostgreSQL refuses to run as root).
    pub user: Option<(Uid, Gid)>,
    /// Passed as descriptor 3 (the server reaches its data directory through
    /// `/proc/self/fd/3`, so the sandbox's path stays root's alone).
    pub data_fd: Option<&'a OwnedFd>,
    pub log: &'a Path,
}

/// A running scratch server.
pub(super) struct Server {
    child: Child,
    pid_file: PathBuf,
}

/// The descriptor a server finds its own directory on ...
const DATA_FD: i32 = 3;
/// ... and the path it reaches it by: never the sandbox's own path, which only root
/// may traverse.
pub(super) const DATA_PATH: &str = "/proc/self/fd/3";

/// A directory of the scratch user's own inside the (root-only) sandbox, open, to be
/// passed to its server as descriptor 3.
pub(super) struct OwnDir {
    pub path: PathBuf,
    pub fd: OwnedFd,
    pub user: (Uid, Gid),
}

/// Creates `path` (0700) for the unprivileged user `name` and opens it.
pub(super) fn own_dir(path: &Path, name: &str) -> Result<OwnDir, DatabaseError> {
    let user = match nix::unistd::User::from_name(name) {
        Ok(Some(user)) if !user.uid.is_root() => (user.uid, user.gid),
        _ => {
            return Err(DatabaseError::ScratchServer {
                tool: "server".into(),
                problem: format!(
                    "cannot run as {name:?}: no such unprivileged user (daemon.drill_user)"
                ),
            });
        }
    };
    let io = |source: std::io::Error| DatabaseError::Io {
        path: path.to_path_buf(),
        source,
    };
    private_dir(path)?;
    std::os::unix::fs::chown(path, Some(user.0.as_raw()), Some(user.1.as_raw())).map_err(io)?;
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| io(e.into()))?;
    Ok(OwnDir {
        path: path.to_path_buf(),
        fd,
        user,
    })
}

/// Prepares `command` as `launch` says (in the child, between fork and exec).
pub(super) fn prepare(command: &mut Command, launch: &Launch<'_>) -> Result<(), ToolError> {
    let log = std::fs::File::create(launch.log).map_err(|source| ToolError::Start {
        tool: launch.tool.to_owned(),
        source,
    })?;
    let log_err = log.try_clone().map_err(|source| ToolError::Start {
        tool: launch.tool.to_owned(),
        source,
    })?;
    // Nothing of the daemon's environment (store credentials) reaches a server that
    // hostile SQL may make print it.
    command
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        )
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .kill_on_drop(true);
    let user = launch.user;
    let data_fd = launch.data_fd.map(|fd| fd.as_raw_fd());
    let daemon = nix::unistd::getpid();
    // SAFETY: between fork and exec only async-signal-safe calls are made (unshare,
    // setgroups, setgid, setuid, prctl, getppid, dup2, fcntl), on values computed
    // before the fork.
    unsafe {
        command.pre_exec(move || in_child(user, data_fd, daemon));
    }
    Ok(())
}

fn in_child(user: Option<(Uid, Gid)>, data_fd: Option<i32>, daemon: Pid) -> std::io::Result<()> {
    // A network namespace of its own: the server (and any program hostile SQL starts
    // in it) reaches no network, only its Unix socket. Where namespaces are not
    // allowed (a container, systemd's RestrictNamespaces) it goes without.
    let _ = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET);
    if let Some((uid, gid)) = user {
        nix::unistd::setgroups(&[gid])?;
        nix::unistd::setgid(gid)?;
        nix::unistd::setuid(uid)?;
    }
    nix::sys::prctl::set_no_new_privs()?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    // The daemon died before the death signal was set: nothing would kill us later.
    if nix::unistd::getppid() != daemon {
        return Err(std::io::Error::other("the daemon is gone"));
    }
    if let Some(fd) = data_fd {
        if fd == DATA_FD {
            let flags = nix::fcntl::FdFlag::empty();
            // SAFETY: `fd` is open in the child (inherited).
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_SETFD(flags))?;
        } else {
            // dup2 clears close-on-exec on the new descriptor.
            if unsafe { libc::dup2(fd, DATA_FD) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Runs a set-up tool (`initdb`, `mariadb-install-db`) prepared as `launch` says to
/// its end, within `timeout`; a failure is its log's last line.
pub(super) async fn run_setup(
    command: &mut Command,
    launch: &Launch<'_>,
    timeout: std::time::Duration,
) -> Result<(), DatabaseError> {
    prepare(command, launch)?;
    let mut child = command.spawn().map_err(|source| ToolError::Start {
        tool: launch.tool.to_owned(),
        source,
    })?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        _ => Err(DatabaseError::ScratchServer {
            tool: launch.tool.to_owned(),
            problem: format!("failed: {}", last_log_line(launch.log)),
        }),
    }
}

impl Server {
    /// Starts the prepared `command` and records it in its directory.
    pub(super) fn start(command: &mut Command, tool: &str, dir: &Path) -> Result<Self, ToolError> {
        let child = command.spawn().map_err(|source| ToolError::Start {
            tool: tool.to_owned(),
            source,
        })?;
        let pid_file = dir.join(PID_FILE);
        if let Some(pid) = child.id() {
            let record = format!("{pid} {}\n", start_time(pid).unwrap_or_default());
            // Best effort: the death signal already covers a crash of the daemon.
            let _ = std::fs::write(&pid_file, record);
        }
        Ok(Server { child, pid_file })
    }

    /// Whether the server process has exited (then its log says why).
    pub(super) fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the server and its children, and waits for it.
    pub(super) async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = self.child.wait().await;
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait()
            && let Some(pid) = self.child.id()
        {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// The process's start time (clock ticks after boot, field 22 of `/proc/PID/stat`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Kills every server recorded in a crashed drill's sandbox `root` whose process is
/// still the one recorded. Returns how many were killed.
///
/// Only the pid files of the part directories are read (`root/PART/`, root's own):
/// the directories below them belong to the drill user, and whatever hostile SQL
/// wrote there is never trusted.
pub fn sweep(root: &Path) -> usize {
    let Ok(parts) = std::fs::read_dir(root) else {
        return 0;
    };
    parts
        .flatten()
        .filter(|item| item.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|item| kill_recorded(&item.path().join(PID_FILE)))
        .count()
}

fn kill_recorded(pid_file: &Path) -> bool {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(pid_file);
    let Ok(file) = opened else {
        return false;
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut text = String::new();
    if file.take(64).read_to_string(&mut text).is_err() {
        return false;
    }
    let mut fields = text.split_whitespace();
    let (Some(Ok(pid)), Some(Ok(started))) = (
        fields.next().map(str::parse::<u32>),
        fields.next().map(str::parse::<u64>),
    ) else {
        return false;
    };
    if pid <= 1 || start_time(pid) != Some(started) {
        return false;
    }
    killpg(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok()
}

/// Kills every process of the user `name` (start-up, no drill running): what a
/// hostile dump started as the drill user and detached from its server. Only for a
/// user of the drills' own, never `nobody`, whose processes belong to others.
pub fn kill_leftovers_of(name: &str) -> usize {
    if name == "nobody" {
        return 0;
    }
    let Ok(Some(user)) = nix::unistd::User::from_name(name) else {
        return 0;
    };
    if user.uid.is_root() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| {
                use std::os::unix::fs::MetadataExt;
                m.uid() == user.uid.as_raw()
            })
        })
        .filter(|pid| nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGKILL).is_ok())
        .count()
}

/// Waits until `ready` says yes, the server exits, or `timeout` passes.
pub(super) async fn wait_ready<F, Fut>(
    server: &mut Server,
    tool: &str,
    log: &Path,
    timeout: Duration,
    mut ready: F,
) -> Result<(), DatabaseError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if ready().await {
            return Ok(());
        }
        if server.has_exited() || tokio::time::Instant::now() >= deadline {
            let why = last_log_line(log);
            return Err(DatabaseError::ScratchServer {
                tool: tool.to_owned(),
                problem: if server.has_exited() {
                    format!("exited: {why}")
                } else {
                    format!("not ready within {}s: {why}", timeout.as_secs())
                },
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last non-empty line of a server's log.
pub(super) fn last_log_line(log: &Path) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text[text.len().saturating_sub(4096)..]).into_owned();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no log")
        .trim()
        .to_owned()
}

/// A private directory (0700) for a server's data.
pub(super) fn private_dir(path: &Path) -> Result<(), DatabaseError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|source| DatabaseError::Io {
            path: path.to_path_buf(),
            source,
        })
}
