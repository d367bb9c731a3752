//! Where an environment's version comes from: a literal, a file, or a command.
//!
//! Nothing is read at load time (a version file may appear only after a deploy);
//! the daemon reads the version when a backup records it or a restore checks it.
//! A command is split into words like a shell would split it, but runs without a
//! shell, with a timeout, and is killed if the timeout passes.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// The source of an environment's version (`version = "1.4.2"`,
/// `version = { file = "/srv/live/VERSION" }` or `version = { command = "..." }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSource {
    Literal(String),
    File(PathBuf),
    Command(String),
}

impl VersionSource {
    /// The current version, trimmed. An empty version is an error, as is a command
    /// that exits non-zero or outlives `timeout`; the message names the file or
    /// command.
    pub async fn read(&self, timeout: Duration) -> Result<String, String> {
        let raw = match self {
            VersionSource::Literal(text) => text.clone(),
            VersionSource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("cannot read version file {}: {e}", path.display()))?,
            VersionSource::Command(command) => run_version_command(command, timeout).await?,
        };
        let version = raw.trim();
        if version.is_empty() {
            return Err(match self {
                VersionSource::Literal(_) => "the version is empty".to_owned(),
                VersionSource::File(path) => format!("version file {} is empty", path.display()),
                VersionSource::Command(command) => {
                    format!("version command `{command}` printed nothing")
                }
            });
        }
        Ok(version.to_owned())
    }
}

async fn run_version_command(command: &str, timeout: Duration) -> Result<String, String> {
    let words = shell_words::split(command)
        .map_err(|e| format!("cannot split version command `{command}`: {e}"))?;
    let Some((program, args)) = words.split_first() else {
        return Err("the version command is empty".to_owned());
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run version command `{command}`: {e}"))?;
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| format!("version command `{command}` did not finish within {timeout:?}"))?
        .map_err(|e| format!("version command `{command}` failed: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first_line = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let mut message = format!("version command `{command}` failed with {}", output.status);
        if !first_line.is_empty() {
            message.push_str(": ");
            message.push_str(first_line.trim());
        }
        return Err(message);
    }
    String::from_utf8(output.stdout)
        .map_err(|_| format!("version command `{command}` printed something that is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn literal_is_trimmed() {
        let source = VersionSource::Literal(" 1.4.2\n".to_owned());
        assert_eq!(source.read(SECOND).await.unwrap(), "1.4.2");
    }

    #[tokio::test]
    async fn file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("VERSION");
        std::fs::write(&path, "2.0.1\n").unwrap();
        assert_eq!(
            VersionSource::File(path).read(SECOND).await.unwrap(),
            "2.0.1"
        );
        let missing = VersionSource::File(dir.path().join("nope"));
        assert!(missing.read(SECOND).await.unwrap_err().contains("nope"));
    }

    #[tokio::test]
    async fn command_runs_without_a_shell() {
        let source = VersionSource::Command("echo '3.1  beta' $HOME".to_owned());
        // No shell: `$HOME` is passed to echo as is.
        assert_eq!(source.read(SECOND).await.unwrap(), "3.1  beta $HOME");
    }

    #[tokio::test]
    async fn failing_command_is_named() {
        let source = VersionSource::Command("sh -c 'echo oops >&2; exit 3'".to_owned());
        let err = source.read(SECOND).await.unwrap_err();
        assert!(err.contains("sh -c 'echo oops >&2; exit 3'"), "{err}");
        assert!(err.contains("oops"), "{err}");
        let empty = VersionSource::Command("true".to_owned());
        assert!(
            empty
                .read(SECOND)
                .await
                .unwrap_err()
                .contains("printed nothing")
        );
    }

    #[tokio::test]
    async fn slow_command_times_out() {
        let source = VersionSource::Command("sleep 5".to_owned());
        let err = source.read(Duration::from_millis(100)).await.unwrap_err();
        assert!(err.contains("did not finish"), "{err}");
    }
}
