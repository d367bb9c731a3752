//! `import`: the client opens the archives and passes them to the daemon.
//!
//! Each `--part PART=FILE` file is opened here, with the caller's own rights, and
//! passed over the socket; the daemon never opens a path for a client. A
//! `PART=URL` (http(s) or a store URL) is fetched by the daemon instead. With
//! `--restore`, the imported backup is then restored like `envsnapctl restore ENV
//! BACKUP --yes --wait` (the caller confirmed before anything was sent, unless
//! `--yes`), and `--json` prints one document with both results.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;

use super::error::CliError;
use super::progress::ProgressDisplay;
use crate::control::client::Client;
use crate::control::protocol::Request;

/// Whether a `--part` source is a URL for the daemon to fetch rather than a file.
pub fn is_url(from: &std::path::Path) -> bool {
    from.to_str().is_some_and(|text| text.contains("://"))
}

/// `PART=FILE` (or `PART=URL`) as given on the command line.
pub fn parse_part(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((part, file)) if !part.is_empty() && !file.is_empty() => {
            Ok((part.to_owned(), PathBuf::from(file)))
        }
        _ => Err(format!(
            "expected PART=FILE, e.g. files:uploads=uploads.tar.gz, not {text:?}"
        )),
    }
}

pub async fn run(
    client: &Client,
    request: Request,
    files: &[PathBuf],
    restore: bool,
    json: bool,
) -> Result<(), CliError> {
    let opened = files
        .iter()
        .map(|path| {
            std::fs::File::open(path).map_err(|e| {
                CliError::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot open {}: {e}", path.display()),
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let fds: Vec<_> = opened.iter().map(|f| f.as_fd()).collect();
    let imported = follow(client, request.clone(), &fds).await?;
    if !restore {
        return print(&request, imported.get(), json);
    }
    let data: serde_json::Value = serde_json::from_str(imported.get())?;
    let Request::Import { env, .. } = &request else {
        unreachable!("an import request")
    };
    let backup = data["backup"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if !json {
        print(&request, imported.get(), false)?;
    }
    let restore = Request::Restore {
        env: env.clone(),
        backup,
        from: None,
        map: Default::default(),
        wait: true,
        no_safety_backup: false,
        dry_run: false,
    };
    let restored = follow(client, restore.clone(), &[]).await?;
    if json {
        let both = format!(
            "{{\"import\":{},\"restore\":{}}}",
            imported.get(),
            restored.get()
        );
        return print(&request, &both, true);
    }
    print(&restore, restored.get(), false)
}

/// Calls the daemon with a progress bar on a terminal.
async fn follow(
    client: &Client,
    request: Request,
    files: &[std::os::fd::BorrowedFd<'_>],
) -> Result<Box<serde_json::value::RawValue>, CliError> {
    let display = ProgressDisplay::on_terminal();
    let result = client
        .call_with_files(request, files, |progress| {
            if let Some(display) = &display {
                display.update(progress);
            }
        })
        .await;
    if let Some(display) = display {
        display.finish();
    }
    Ok(result?)
}

fn print(request: &Request, raw: &str, json: bool) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    if json {
        writeln!(stdout, "{raw}")?;
    } else {
        let data: serde_json::Value = serde_json::from_str(raw)?;
        stdout.write_all(super::result::render(request, &data, &chrono::Local)?.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_part_equals_file() {
        assert_eq!(
            parse_part("files:uploads=/tmp/u.tar.gz"),
            Ok(("files:uploads".into(), PathBuf::from("/tmp/u.tar.gz")))
        );
        assert!(parse_part("code").is_err());
        assert!(parse_part("=x").is_err());
    }
}
