//! Running operators' commands: hooks, `app.stop/start/check`, database stop/start.
//!
//! A command line is split like a shell splits words and run without a shell, with a
//! timeout. A non-zero exit, a timeout or a missing program is an error that names
//! the command and gives the last line it printed on stderr.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
#[error("command `{command}` {problem}")]
pub struct CommandError {
    pub command: String,
    pub problem: String,
}

/// Runs `line` with extra environment variables; returns its standard output.
pub async fn run(
    line: &str,
    env: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<String, CommandError> {
    let fail = |problem: String| CommandError {
        command: line.to_owned(),
        problem,
    };
    let words = shell_words::split(line).map_err(|e| fail(format!("cannot be parsed: {e}")))?;
    let (program, args) = words.split_first().ok_or_else(|| fail("is empty".into()))?;
    let mut child = Command::new(program)
        .args(args)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("could not start: {e}")))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let outcome = tokio::time::timeout(timeout, async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (read_out, read_err, status) = tokio::join!(
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err),
            child.wait()
        );
        read_out
            .and(read_err)
            .map_err(|e| fail(format!("output could not be read: {e}")))?;
        Ok::<_, CommandError>((status.map_err(|e| fail(e.to_string()))?, out, err))
    })
    .await;
    let (status, out, err) = match outcome {
        Ok(result) => result?,
        Err(_) => return Err(fail(format!("timed out after {}s", timeout.as_secs()))),
    };
    if !status.success() {
        let last = String::from_utf8_lossy(&err)
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_owned();
        let code = status.code().map_or_else(
            || "was killed by a signal".to_owned(),
            |c| format!("exited with status {c}"),
        );
        return Err(fail(if last.is_empty() {
            code
        } else {
            format!("{code}: {last}")
        }));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Runs each command in turn, stopping at the first failure.
pub async fn run_all(
    lines: &[String],
    env: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<(), CommandError> {
    for line in lines {
        run(line, env, timeout).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_name_the_command_and_its_last_error_line() {
        let none = BTreeMap::new();
        let t = Duration::from_secs(5);
        assert_eq!(
            run("echo 'hello world'", &none, t).await.unwrap(),
            "hello world\n"
        );
        let err = run("sh -c 'echo first >&2; echo oops >&2; exit 3'", &none, t)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "command `sh -c 'echo first >&2; echo oops >&2; exit 3'` exited with status 3: oops"
        );
        let err = run("/nonexistent/program", &none, t).await.unwrap_err();
        assert!(err.to_string().contains("could not start"), "{err}");
        let err = run("sleep 5", &none, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
        let mut env = BTreeMap::new();
        env.insert("ENVSNAP_ENV".to_owned(), "live".to_owned());
        assert_eq!(
            run("sh -c 'echo $ENVSNAP_ENV'", &env, t).await.unwrap(),
            "live\n"
        );
    }
}
