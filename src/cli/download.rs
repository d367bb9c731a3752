//! `backup download`: the client opens the output file and passes it to the daemon.
//!
//! The file is created with the caller's own rights (the daemon never opens a path
//! for a client), as a hidden temporary file beside the target (`O_EXCL`, mode 0600:
//! a dump may hold personal data), and renamed over the target only when the daemon
//! reports success; a failed download removes it, so the target is either the whole
//! part or untouched. `-o -` writes to standard output (not a terminal) and prints
//! the summary on standard error.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::error::CliError;
use crate::control::client::Client;
use crate::control::protocol::Request;

/// The format a file name asks for: `x.tar.zst`/`x.tzst` → tar.zst, `x.tar` → tar.
pub fn format_for_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name.ends_with(".tar.zst") || name.ends_with(".tzst") {
        Some("tar.zst".into())
    } else if name.ends_with(".tar") {
        Some("tar".into())
    } else {
        None
    }
}

pub async fn run(
    client: &Client,
    request: Request,
    output: &Path,
    json: bool,
) -> Result<(), CliError> {
    if output == Path::new("-") {
        let stdout = std::io::stdout();
        if stdout.is_terminal() {
            return Err(CliError::Usage(
                "refusing to write a backup to a terminal: redirect standard output, or use -o FILE".into(),
            ));
        }
        let raw = client
            .call_with_files(request, &[stdout.as_fd()], |_| {})
            .await?;
        return report(&mut std::io::stderr(), raw.get(), None, json);
    }
    let partial = Partial::create(output)?;
    let raw = client
        .call_with_files(request, &[partial.file.as_fd()], |_| {})
        .await?;
    partial.keep()?;
    report(&mut std::io::stdout(), raw.get(), Some(output), json)
}

/// The summary: the result as received with `--json`, a line for people otherwise.
fn report(
    out: &mut impl Write,
    raw: &str,
    path: Option<&Path>,
    json: bool,
) -> Result<(), CliError> {
    if json {
        writeln!(out, "{raw}")?;
    } else {
        out.write_all(summary(&serde_json::from_str(raw)?, path).as_bytes())?;
    }
    Ok(())
}

/// One line for people: what was written where.
pub fn summary(data: &serde_json::Value, path: Option<&Path>) -> String {
    let text = |key: &str| data[key].as_str().unwrap_or_default().to_owned();
    let format = match data["dump"].as_str() {
        Some(dump) => format!("{dump} dump"),
        None => text("format"),
    };
    let target = path.map_or_else(|| "standard output".to_owned(), |p| p.display().to_string());
    format!(
        "wrote part {} of backup {} ({format}, {}) to {target}\n",
        text("part"),
        text("backup"),
        super::text::human_size(data["bytes"].as_u64().unwrap_or_default()),
    )
}

/// A download in progress: a hidden file beside the target, removed unless kept.
struct Partial {
    file: std::fs::File,
    temporary: PathBuf,
    target: PathBuf,
    kept: bool,
}

impl Partial {
    fn create(target: &Path) -> Result<Partial, CliError> {
        let name = target
            .file_name()
            .ok_or_else(|| CliError::Usage(format!("{} is not a file name", target.display())))?;
        let mut random = [0u8; 6];
        getrandom::fill(&mut random).expect("the operating system's random source failed");
        let temporary = target.with_file_name(format!(
            ".{}.envsnap-partial-{}",
            name.to_string_lossy(),
            hex::encode(random)
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot create {}: {e}", target.display()))
            })?;
        Ok(Partial {
            file,
            temporary,
            target: target.to_owned(),
            kept: false,
        })
    }

    fn keep(mut self) -> Result<(), CliError> {
        std::fs::rename(&self.temporary, &self.target).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot write {}: {e}", self.target.display()),
            )
        })?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_file_names() {
        assert_eq!(
            format_for_name(Path::new("/x/code.tar.zst")).as_deref(),
            Some("tar.zst")
        );
        assert_eq!(
            format_for_name(Path::new("code.tzst")).as_deref(),
            Some("tar.zst")
        );
        assert_eq!(
            format_for_name(Path::new("code.tar")).as_deref(),
            Some("tar")
        );
        assert_eq!(format_for_name(Path::new("shop.dump")), None);
    }
}
