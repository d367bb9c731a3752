//! MariaDB in a drill: a scratch `mariadbd` with its data and socket in the
//! sandbox, no network (`--skip-networking`), reached as root over its socket. The
//! dump is loaded into a database named after the part with the `mariadb` client;
//! then every table's rows are counted exactly (`COUNT(*)`, not the estimates of
//! `information_schema`).
//!
//! mariadbd resolves its data directory to a real path, so unlike PostgreSQL and
//! Redis it cannot reach a directory of its own inside the root-only sandbox as
//! another user: it runs as root. The dump (hostile input) is therefore loaded by an
//! account with rights on its database only, and the server may touch files only in
//! its own `files` directory (`--secure-file-priv`, no `LOAD DATA LOCAL`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use super::super::error::{DatabaseError, SourceError};
use super::super::mariadb::{Connection, ident, literal, tool};
use super::super::tool::{feed_tool_through, find_tool};
use super::definers::WithoutDefiners;
use super::part::{DatabaseFigures, ScratchSpec, parse_counts};
use super::server::{Launch, Server, prepare, private_dir, run_setup, wait_ready};
use crate::config::{DatabaseConfig, DatabaseKind};

const KIND: &str = "mariadb";
/// The account the dump is loaded as.
const LOADER: &str = "envsnap_drill";

fn error(problem: impl Into<DatabaseError>) -> SourceError {
    SourceError::unnamed(KIND, problem)
}

pub(super) struct Instance {
    server: Server,
    socket: PathBuf,
    database: String,
    /// As root: to set up, and to count rows of base tables.
    connection: DatabaseConfig,
    /// As the limited account: to load the dump and to run the operator's checks
    /// (a view or routine of the dump runs with no more rights than it loaded with).
    loader: DatabaseConfig,
    dir: PathBuf,
}

pub(super) async fn load(
    spec: &ScratchSpec<'_>,
    name: &str,
) -> Result<(Instance, DatabaseFigures), SourceError> {
    let data = spec.dir.join("data");
    let socket = spec.dir.join("mariadb.sock");
    // The only directory the server may read or write files in (LOAD DATA, OUTFILE).
    let files = spec.dir.join("files");
    private_dir(&files).map_err(error)?;
    // Its own temporary directory: MariaDB's bootstraps sharing /tmp collide on their
    // temporary tables (one of several running at once fails, `Unknown table`).
    let tmp = spec.dir.join("tmp");
    private_dir(&tmp).map_err(error)?;
    install_db(&data, &tmp, spec.dir, spec.timeout).await?;
    let server_bin = find_tool(&["mariadbd", "mysqld"], &[PathBuf::from("/usr/sbin")])
        .ok_or_else(|| error(DatabaseError::NotInstalled("mariadbd".into())))?;
    let log = spec.dir.join("mariadbd.log");
    let mut command = Command::new(server_bin);
    command
        .args([
            "--no-defaults",
            "--user=root",
            "--skip-networking",
            "--skip-log-bin",
            "--local-infile=0",
            "--event-scheduler=OFF",
            "--skip-symbolic-links",
        ])
        .arg(format!("--secure-file-priv={}", files.display()))
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!(
            "--pid-file={}",
            spec.dir.join("mariadbd.pid").display()
        ))
        .arg("--innodb-flush-log-at-trx-commit=0");
    let launch = Launch {
        tool: "mariadbd",
        user: None,
        data_fd: None,
        log: &log,
    };
    prepare(&mut command, &launch).map_err(error)?;
    let server = Server::start(&mut command, "mariadbd", spec.dir).map_err(error)?;
    let mut instance = Instance {
        server,
        connection: connection(&socket),
        loader: connection(&socket),
        socket,
        database: name.to_owned(),
        dir: spec.dir.to_path_buf(),
    };
    instance.wait_ready(&log, spec.timeout).await?;
    instance.restore(spec).await?;
    let figures = instance.figures().await?;
    Ok((instance, figures))
}

fn connection(socket: &Path) -> DatabaseConfig {
    DatabaseConfig {
        kind: DatabaseKind::Mariadb,
        path: None,
        database: None,
        host: None,
        port: None,
        user: Some("root".into()),
        password_file: None,
        socket: Some(socket.to_path_buf()),
        rdb_path: None,
        stop: Vec::new(),
        start: Vec::new(),
    }
}

async fn install_db(
    data: &Path,
    tmp: &Path,
    dir: &Path,
    timeout: Duration,
) -> Result<(), SourceError> {
    let install = find_tool(&["mariadb-install-db", "mysql_install_db"], &[])
        .ok_or_else(|| error(DatabaseError::NotInstalled("mariadb-install-db".into())))?;
    let log = dir.join("install-db.log");
    let mut command = Command::new(install);
    command
        .args(["--no-defaults", "--user=root", "--skip-test-db"])
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .arg("--auth-root-authentication-method=socket");
    let launch = Launch {
        tool: "mariadb-install-db",
        user: None,
        data_fd: None,
        log: &log,
    };
    run_setup(&mut command, &launch, timeout)
        .await
        .map_err(error)
}

fn random_password() -> String {
    let mut random = [0u8; 18];
    getrandom::fill(&mut random).expect("the operating system's random source failed");
    hex::encode(random)
}

/// A file only root may read, holding `secret`.
fn write_secret(path: &Path, secret: &str) -> Result<(), DatabaseError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{secret}\n").as_bytes()))
        .map_err(|source| DatabaseError::Io {
            path: path.to_path_buf(),
            source,
        })
}

impl Instance {
    pub(super) fn socket(&self) -> &Path {
        &self.socket
    }

    async fn wait_ready(&mut self, log: &Path, timeout: Duration) -> Result<(), SourceError> {
        let (config, dir) = (self.connection.clone(), self.dir.clone());
        wait_ready(&mut self.server, "mariadbd", log, timeout, || {
            let (config, dir) = (config.clone(), dir.clone());
            async move {
                match Connection::open(&config, &dir) {
                    Ok(c) => c.admin("SELECT 1;\n").await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await
        .map_err(error)
    }

    /// Loads the dump as an account limited to the database, its definers removed
    /// (`definers.rs`): a hostile dump cannot change the server's settings (`SET
    /// GLOBAL general_log_file`), write files, or define an object that runs as
    /// another account, though the server runs as root.
    async fn restore(&mut self, spec: &ScratchSpec<'_>) -> Result<(), SourceError> {
        let root = Connection::open(&self.connection, &self.dir)?;
        let password = random_password();
        let db = ident(&self.database);
        root.admin(&format!(
            "CREATE DATABASE {db};\nCREATE USER {LOADER}@localhost IDENTIFIED BY {};\nGRANT ALL ON {db}.* TO {LOADER}@localhost;\n",
            literal(&password)
        ))
        .await?;
        let password_file = self.dir.join("loader.pass");
        write_secret(&password_file, &password).map_err(error)?;
        self.loader.user = Some(LOADER.to_owned());
        self.loader.password_file = Some(password_file);
        let connection = Connection::open(&self.loader, &self.dir)?;
        let (client, client_name) = tool(&["mariadb", "mysql"])?;
        let mut command = connection.command(&client);
        command.args(["--local-infile=0", "--binary-mode", "--", &self.database]);
        feed_tool_through(
            &mut command,
            &client_name,
            spec.repo,
            spec.manifest,
            spec.part,
            WithoutDefiners::new,
        )
        .await
        .map_err(|source| {
            error(DatabaseError::NotLoaded {
                name: self.database.clone(),
                source,
            })
        })
    }

    async fn figures(&self) -> Result<DatabaseFigures, SourceError> {
        let connection = Connection::open(&self.connection, &self.dir)?;
        let names = connection
            .admin(&format!(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME;\n",
                literal(&self.database)
            ))
            .await?;
        let counts: Vec<String> = names
            .lines()
            .filter(|n| !n.trim().is_empty())
            .map(|n| format!("SELECT {}, COUNT(*) FROM {}", literal(n), ident(n)))
            .collect();
        if counts.is_empty() {
            return Ok(DatabaseFigures::default());
        }
        let output = self
            .query(&format!("{};\n", counts.join(" UNION ALL ")))
            .await?;
        Ok(DatabaseFigures {
            tables: parse_counts(&output).map_err(error)?,
            ..Default::default()
        })
    }

    pub(super) async fn query(&self, sql: &str) -> Result<String, SourceError> {
        let connection = Connection::open(&self.loader, &self.dir)?;
        connection.query(Some(&self.database), sql).await
    }

    pub(super) async fn stop(self) {
        self.server.stop().await;
    }
}
