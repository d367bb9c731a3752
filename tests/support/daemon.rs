//! A real envsnapd in a temp directory, driven by the real envsnapctl over its socket.
//!
//! The daemon gets the test process's environment without its `ENVSNAP_*` variables:
//! its config comes from its file alone, whatever a developer's shell or another test
//! running at the same time (`engine::config_errors` sets one) has set.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    child: Option<Child>,
}

/// What envsnapctl did.
pub struct Ctl {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ctl {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }

    pub fn ok(self) -> Self {
        assert_eq!(self.status, 0, "envsnapctl failed: {}", self.stderr);
        self
    }
}

impl From<Output> for Ctl {
    fn from(out: Output) -> Self {
        Ctl {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A config with one environment `live`: code, one mount, one SQLite database.
pub fn standard_config(dir: &Path, extra: &str) -> String {
    format!(
        r#"
[daemon]
host = "test-host"
socket = "{dir}/run/envsnapd.sock"
state_dir = "{dir}/state"
max_jobs = 2

[store]
url = "file://{dir}/store"

[environments.live]
version = {{ file = "{dir}/live/VERSION" }}
code = "{dir}/live/app"

[environments.live.mounts.uploads]
path = "{dir}/live/uploads"
exclude = ["cache/**"]

[environments.live.databases.main]
kind = "sqlite"
path = "{dir}/live/data/main.db"

[environments.test]
version = "1.0"
code = "{dir}/test/app"
{extra}
"#,
        dir = dir.display()
    )
}

/// [`standard_config`] with its store at `store` (a URL: `s3://...`, `az://...`)
/// instead of the local directory.
pub fn standard_config_on(dir: &Path, store: &str, extra: &str) -> String {
    standard_config(dir, extra).replace(
        &format!("url = \"file://{}/store\"", dir.display()),
        &format!("url = \"{store}\""),
    )
}

/// Lays out the `live` and `test` environments' files.
pub fn make_environments(dir: &Path) {
    for sub in [
        "live/app/src",
        "live/uploads/cache",
        "live/data",
        "test/app",
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("live/VERSION"), "2.4.1\n").unwrap();
    std::fs::write(dir.join("live/app/index.php"), "<?php echo 'hi';\n").unwrap();
    std::fs::write(dir.join("live/app/src/lib.php"), "<?php // lib\n").unwrap();
    std::fs::write(dir.join("live/uploads/photo.jpg"), vec![7u8; 50_000]).unwrap();
    std::fs::write(dir.join("live/uploads/cache/tmp.bin"), b"cache").unwrap();
    std::fs::write(dir.join("test/app/index.php"), "test\n").unwrap();
    let status = Command::new("sqlite3")
        .arg(dir.join("live/data/main.db"))
        .arg("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('a'),('b'),('c');")
        .status()
        .expect("sqlite3 is installed");
    assert!(status.success());
}

impl TestDaemon {
    /// Starts a daemon on the standard config (plus `extra` TOML) and waits until it answers.
    pub fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        make_environments(dir.path());
        let config = dir.path().join("envsnap.toml");
        std::fs::write(&config, standard_config(dir.path(), extra)).unwrap();
        let socket = dir.path().join("run/envsnapd.sock");
        let mut daemon = TestDaemon {
            dir,
            config,
            socket,
            child: None,
        };
        daemon.spawn();
        daemon
    }

    /// Starts a daemon on `config` (a function of the directory) in `dir`.
    pub fn start_in(dir: tempfile::TempDir, config: impl FnOnce(&Path) -> String) -> Self {
        let config_path = dir.path().join("envsnap.toml");
        std::fs::write(&config_path, config(dir.path())).unwrap();
        let text = std::fs::read_to_string(&config_path).unwrap();
        let socket = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("socket = "))
            .map(|s| PathBuf::from(s.trim_matches('"')))
            .expect("the config names its socket");
        let mut daemon = TestDaemon {
            dir,
            config: config_path,
            socket,
            child: None,
        };
        daemon.spawn();
        daemon
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("daemon.log"))
            .unwrap();
        let child = envsnapd()
            .arg("--config")
            .arg(&self.config)
            .env("ENVSNAP_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.socket.exists() && self.ctl(&["status"]).status == 0 {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("envsnapd exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("envsnapd did not become ready: {}", self.log());
    }

    /// Lets any local user reach the socket (as `daemon.socket_group` would let a group).
    pub fn open_socket_to_everyone(&self) {
        use std::os::unix::fs::PermissionsExt;
        for (path, mode) in [
            (self.dir.path().to_path_buf(), 0o755),
            (self.path("run"), 0o777),
            (self.socket.clone(), 0o777),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }

    /// Every file under the store's `packs/` (name, size), half-written uploads included.
    pub fn pack_files(&self) -> Vec<(String, u64)> {
        fn walk(dir: &Path, found: &mut Vec<(String, u64)>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let meta = entry.metadata().unwrap();
                if meta.is_dir() {
                    walk(&entry.path(), found);
                } else {
                    found.push((entry.file_name().to_string_lossy().into_owned(), meta.len()));
                }
            }
        }
        let mut found = Vec::new();
        walk(&self.path("store/test-host/packs"), &mut found);
        found
    }

    /// Total bytes under the store's `packs/`.
    pub fn pack_bytes(&self) -> u64 {
        self.pack_files().iter().map(|(_, size)| size).sum()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn ctl(&self, args: &[&str]) -> Ctl {
        self.ctl_as(None, args)
    }

    /// Runs envsnapctl, as another user when `uid` is given.
    pub fn ctl_as(&self, uid: Option<u32>, args: &[&str]) -> Ctl {
        let mut command = Command::new(env!("CARGO_BIN_EXE_envsnapctl"));
        command
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null());
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(uid);
        }
        command.output().unwrap().into()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.ctl(&all).ok().json()
    }

    /// Sends a signal and waits for the daemon to exit; returns its exit code.
    pub fn signal_and_wait(&mut self, signal: nix::sys::signal::Signal) -> Option<i32> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
        let status = self.child.take().unwrap().wait().unwrap();
        status.code()
    }

    pub fn wait_for_job(&self, id: i64, states: &[&str]) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let job = self.json(&["job", "show", &id.to_string()]);
            if states.contains(&job["state"].as_str().unwrap()) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} stuck in {}",
                job["state"]
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The envsnapd command, with the test process's environment minus `ENVSNAP_*`.
fn envsnapd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_envsnapd"));
    // One snapshot, taken now: a variable set after it cannot slip in at spawn.
    command.env_clear().envs(
        std::env::vars_os().filter(|(name, _)| !name.as_encoded_bytes().starts_with(b"ENVSNAP_")),
    );
    command
}

/// Runs envsnapd on `config`, which must stop it at start with exit status 1 and one
/// line on stderr; returns that line.
pub fn start_failing(config: &Path) -> String {
    let mut child = envsnapd()
        .arg("--config")
        .arg(config)
        .env("ENVSNAP_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A daemon that starts instead of failing must not hang the test.
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("envsnapd started instead of failing");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr.trim().to_owned()
}

/// A Unix user for access tests (created once; tests running at the same time may
/// race on /etc/passwd's lock, so creation is retried).
pub fn ensure_user(name: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(user) = nix::unistd::User::from_name(name).unwrap() {
            return user.uid.as_raw();
        }
        let _ = Command::new("useradd")
            .args(["--system", "--no-create-home", "--user-group", name])
            .status();
        assert!(Instant::now() < deadline, "cannot create test user {name}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
