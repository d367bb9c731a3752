//! Throwaway database servers for the end-to-end tests, each in its own temp dir and
//! reachable only through a Unix socket there (see STACK.md for how they are run as
//! root). Each server stops when dropped. `start` returns `None` when the server's
//! binaries are not installed, so a developer machine without them skips the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn run(command: &mut Command) -> String {
    let out = command.output().expect("the program starts");
    stdout_of_success(command, out)
}

/// As [`run`], with `input` on stdin: SQL that may hold a test password goes there,
/// never on argv, where other tests watching `ps` for it would see it.
fn run_with_input(command: &mut Command, input: &str) -> String {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the program starts");
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    stdout_of_success(command, out)
}

fn stdout_of_success(command: &Command, out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes a 0600 password file.
pub fn password_file(path: &Path, password: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{password}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// PostgreSQL 15 run as the `postgres` user; role `app` (password auth) owns its
/// databases.
pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub password: String,
}

impl Postgres {
    pub const USER: &'static str = "app";

    pub fn start() -> Option<Postgres> {
        let bin = PathBuf::from("/usr/lib/postgresql/15/bin");
        if !bin.join("initdb").exists() || !Path::new("/usr/sbin/runuser").exists() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir.path()));
        let data = dir.path().join("data");
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null()));
        // The superuser by peer trust; everyone else by password.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all postgres trust\nlocal all all scram-sha-256\n",
        )
        .unwrap();
        let options = format!(
            "-k {} -c listen_addresses= -c fsync=off",
            dir.path().display()
        );
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("server.log"))
            .args(["-w", "-o", &options, "start"])
            .stdout(Stdio::null()));
        let server = Postgres {
            dir,
            bin,
            password: "pg-Secret-7f3a9c".to_owned(),
        };
        server.superuser(&format!(
            "CREATE ROLE app LOGIN CREATEDB PASSWORD '{}'",
            server.password
        ));
        Some(server)
    }

    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// psql as `user` on `database`, quiet, unaligned, stopping at the first error.
    fn psql(&self, user: &str, database: &str) -> Command {
        let mut command = Command::new(self.bin.join("psql"));
        command
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-U", user, "-h"])
            .arg(self.socket_dir())
            .args(["-d", database]);
        command
    }

    /// Runs SQL as the superuser (through stdin: see [`run_with_input`]).
    pub fn superuser(&self, sql: &str) -> String {
        run_with_input(self.psql("postgres", "postgres").args(["-f", "-"]), sql)
    }

    /// Runs SQL as `app` in `database`; returns unaligned tuples.
    pub fn sql(&self, database: &str, sql: &str) -> String {
        run(self
            .psql(Self::USER, database)
            .env("PGPASSWORD", &self.password)
            .args(["-c", sql]))
    }

    pub fn pgbench_init(&self, database: &str, scale: u32) {
        run(Command::new(self.bin.join("pgbench"))
            .env("PGPASSWORD", &self.password)
            .args(["-i", "-q", "-s", &scale.to_string(), "-U", Self::USER, "-h"])
            .arg(self.socket_dir())
            .arg(database)
            .stderr(Stdio::null()));
    }

    pub fn stop(&self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// MariaDB on a socket only; root by socket auth, user `app` by password.
pub struct Mariadb {
    pub dir: tempfile::TempDir,
    pub password: String,
    child: Child,
}

impl Mariadb {
    pub fn start() -> Option<Mariadb> {
        if !Path::new("/usr/sbin/mariadbd").exists() || which("mariadb-install-db").is_none() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // Its own temporary directory: bootstraps sharing /tmp collide on their
        // temporary tables when tests start servers at once.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        run(Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=root", "--skip-test-db"])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg("--auth-root-authentication-method=socket")
            .stdout(Stdio::null())
            .stderr(Stdio::null()));
        let socket = dir.path().join("mariadb.sock");
        let child = Command::new("/usr/sbin/mariadbd")
            .args(["--no-defaults", "--user=root", "--skip-networking"])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!(
                "--log-error={}",
                dir.path().join("error.log").display()
            ))
            .arg("--innodb-flush-log-at-trx-commit=0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Mariadb {
            dir,
            password: "maria-Secret-41bd2e".to_owned(),
            child,
        };
        wait_until("mariadbd", || {
            socket.exists()
                && Command::new("mariadb")
                    .arg(format!("--socket={}", socket.display()))
                    .args(["-e", "SELECT 1"])
                    .output()
                    .is_ok_and(|o| o.status.success())
        });
        server.root(&format!(
            "CREATE USER app@localhost IDENTIFIED BY '{}'; GRANT ALL ON shop.* TO app@localhost;",
            server.password
        ));
        Some(server)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mariadb.sock")
    }

    /// Runs SQL as root (in `shop` when it exists); returns tab-separated rows.
    pub fn root(&self, sql: &str) -> String {
        run_with_input(
            Command::new("mariadb")
                .arg(format!("--socket={}", self.socket().display()))
                .args(["--batch", "--skip-column-names"]),
            sql,
        )
    }

    /// Runs SQL as `app`.
    pub fn app(&self, sql: &str) -> String {
        run(Command::new("mariadb")
            .env("MYSQL_PWD", &self.password)
            .arg(format!("--socket={}", self.socket().display()))
            .args(["--user=app", "--batch", "--skip-column-names", "-e", sql]))
    }

    pub fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        self.stop();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Redis from a config file (daemonized, socket only, password required), so that a
/// restore's `stop` and `start` commands can stop it and start it again.
pub struct Redis {
    pub dir: tempfile::TempDir,
    pub password: String,
}

impl Redis {
    pub fn start() -> Option<Redis> {
        which("redis-server")?;
        which("redis-cli")?;
        let dir = tempfile::tempdir().unwrap();
        let server = Redis {
            dir,
            password: "redis-Secret-93ce10".to_owned(),
        };
        let d = server.dir.path().display();
        std::fs::write(
            server.config(),
            format!(
                "port 0\nunixsocket {d}/redis.sock\ndir {d}\ndbfilename dump.rdb\nsave \"\"\n\
                 appendonly no\nrepl-diskless-sync-delay 0\ndaemonize yes\npidfile {d}/redis.pid\n\
                 logfile {d}/redis.log\nrequirepass {}\n",
                server.password
            ),
        )
        .unwrap();
        password_file(&server.dir.path().join("password"), &server.password);
        run(Command::new("redis-server").arg(server.config()));
        server.wait_ready();
        Some(server)
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("redis.conf")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    pub fn rdb_path(&self) -> PathBuf {
        self.dir.path().join("dump.rdb")
    }

    /// The commands a config's `stop` and `start` take for this server.
    pub fn stop_command(&self) -> String {
        format!(
            "sh -c 'REDISCLI_AUTH=$(cat {d}/password) redis-cli -s {d}/redis.sock shutdown nosave; while [ -e {d}/redis.pid ]; do sleep 0.05; done'",
            d = self.dir.path().display()
        )
    }

    pub fn start_command(&self) -> String {
        format!("redis-server {}", self.config().display())
    }

    pub fn cli(&self, args: &[&str]) -> String {
        run(Command::new("redis-cli")
            .env("REDISCLI_AUTH", &self.password)
            .arg("-s")
            .arg(self.socket())
            .args(args))
    }

    fn wait_ready(&self) {
        wait_until("redis-server", || {
            Command::new("redis-cli")
                .env("REDISCLI_AUTH", &self.password)
                .arg("-s")
                .arg(self.socket())
                .arg("PING")
                .output()
                .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
        });
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.dir.path().join("redis.pid"));
        if let Some(pid) = pid.ok().and_then(|p| p.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
