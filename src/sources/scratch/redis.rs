//! Redis in a drill: the RDB written into the sandbox and loaded by a scratch
//! `redis-server` run as the unprivileged drill user (no TCP port, a Unix socket in
//! its own directory of the sandbox, persistence off); the drill records how many
//! keys it holds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use super::super::error::{DatabaseError, SourceError};
use super::super::redis::count_keys;
use super::super::tool::{find_tool, run_tool};
use super::part::{DatabaseFigures, ScratchSpec};
use super::server::{DATA_PATH, Launch, OwnDir, Server, own_dir, prepare, wait_ready};

const KIND: &str = "redis";

fn error(problem: impl Into<DatabaseError>) -> SourceError {
    SourceError::unnamed(KIND, problem)
}

pub(super) struct Instance {
    server: Server,
    socket: PathBuf,
    _data: OwnDir,
}

pub(super) async fn load(
    spec: &ScratchSpec<'_>,
) -> Result<(Instance, DatabaseFigures), SourceError> {
    // The server parses the RDB (hostile input) as the unprivileged drill user.
    let data = own_dir(&spec.dir.join("redis"), spec.run_as).map_err(error)?;
    write_rdb(spec, &data).await?;
    let server_bin = find_tool(&["redis-server"], &[])
        .ok_or_else(|| error(DatabaseError::NotInstalled("redis-server".into())))?;
    let log = spec.dir.join("redis.log");
    let mut command = Command::new(server_bin);
    command
        .args([
            "--port",
            "0",
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--unixsocket", &format!("{DATA_PATH}/redis.sock")])
        .args(["--dir", DATA_PATH])
        .args(["--dbfilename", "dump.rdb", "--daemonize", "no"]);
    let launch = Launch {
        tool: "redis-server",
        user: Some(data.user),
        data_fd: Some(&data.fd),
        log: &log,
    };
    prepare(&mut command, &launch).map_err(error)?;
    let server = Server::start(&mut command, "redis-server", spec.dir).map_err(error)?;
    let mut instance = Instance {
        server,
        socket: data.path.join("redis.sock"),
        _data: data,
    };
    instance.wait_ready(&log, spec.timeout).await?;
    let keys = instance.keys().await?;
    Ok((
        instance,
        DatabaseFigures {
            keys: Some(keys),
            ..Default::default()
        },
    ))
}

/// The part as `dump.rdb` in the server's directory, owned by the server's user.
async fn write_rdb(spec: &ScratchSpec<'_>, data: &OwnDir) -> Result<(), SourceError> {
    let rdb = data.path.join("dump.rdb");
    let io = |source| {
        error(DatabaseError::Io {
            path: rdb.clone(),
            source,
        })
    };
    let mut out = tokio::fs::File::create(&rdb).await.map_err(io)?;
    spec.repo
        .read_stream(spec.manifest, spec.part, &mut out)
        .await?;
    drop(out);
    std::os::unix::fs::chown(&rdb, Some(data.user.0.as_raw()), Some(data.user.1.as_raw()))
        .map_err(io)
}

impl Instance {
    pub(super) fn socket(&self) -> &Path {
        &self.socket
    }

    async fn cli(&self, args: &[&str]) -> Result<String, SourceError> {
        let cli = find_tool(&["redis-cli"], &[])
            .ok_or_else(|| error(DatabaseError::NotInstalled("redis-cli".into())))?;
        let mut command = Command::new(cli);
        command
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .env_remove("REDISCLI_AUTH");
        run_tool(&mut command, "redis-cli", b"")
            .await
            .map_err(error)
    }

    async fn wait_ready(&mut self, log: &Path, timeout: Duration) -> Result<(), SourceError> {
        let socket = self.socket.clone();
        let cli = find_tool(&["redis-cli"], &[])
            .ok_or_else(|| error(DatabaseError::NotInstalled("redis-cli".into())))?;
        wait_ready(&mut self.server, "redis-server", log, timeout, || {
            let (socket, cli) = (socket.clone(), cli.clone());
            async move {
                let mut command = Command::new(cli);
                command.arg("-s").arg(socket).arg("PING");
                matches!(run_tool(&mut command, "redis-cli", b"").await, Ok(answer) if answer.trim() == "PONG")
            }
        })
        .await
        .map_err(error)
    }

    /// Keys in every database (`INFO keyspace`: `db0:keys=3,expires=0,...`).
    async fn keys(&self) -> Result<u64, SourceError> {
        let info = self.cli(&["INFO", "keyspace"]).await?;
        Ok(count_keys(&info))
    }

    pub(super) async fn stop(self) {
        self.server.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::redis::count_keys;

    #[test]
    fn keys_are_summed_over_databases() {
        let info =
            "# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\ndb2:keys=40,expires=0,avg_ttl=0\r\n";
        assert_eq!(count_keys(info), 43);
        assert_eq!(count_keys("# Keyspace\r\n"), 0);
    }
}
