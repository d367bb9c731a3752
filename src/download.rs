//! Downloads: one part of a backup, in a format that needs no envsnap to use.
//!
//! A tree part (code, a mount) becomes a tar archive (`tar`, or `tar.zst` compressed
//! with zstd) that GNU tar and bsdtar unpack faithfully (`repo/export.rs`). A database
//! part is its native dump as stored (`native`): a file `pg_restore`, `mariadb`,
//! `sqlite3` or `redis-server` takes as is. The bytes go into a file the client opened
//! and passed over the socket (`control/fdpass.rs`); the daemon never opens a path
//! for a download, and a client that stops reading cannot hold it (`output.rs`).

use std::io::Write;
use std::os::fd::OwnedFd;

use serde::Serialize;
use tokio::io::AsyncWrite;
use tokio_util::io::SyncIoBridge;

use crate::repo::manifest::{Manifest, PartLayout};
use crate::repo::{RepoError, Repository};

/// The formats a part can be downloaded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Format {
    #[serde(rename = "tar")]
    Tar,
    #[serde(rename = "tar.zst")]
    TarZst,
    #[serde(rename = "native")]
    Native,
}

/// zstd level for `tar.zst`: fast, and far smaller than plain tar.
const TAR_ZST_LEVEL: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The request cannot be served as asked; nothing was written.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("writing the download: {0}")]
    Output(std::io::Error),
}

/// What a download wrote.
#[derive(Debug, Serialize)]
pub struct Downloaded {
    pub env: String,
    pub backup: String,
    pub part: String,
    pub format: Format,
    /// For a database part, what the native dump is (`postgres-custom`, `sqlite`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dump: Option<String>,
    /// Bytes written to the file.
    pub bytes: u64,
}

/// The format to use for `part` of `manifest`: `asked`, checked against the part's
/// layout, or the part's default (`tar` for trees, `native` for databases).
pub fn choose_format(
    manifest: &Manifest,
    part: &str,
    asked: Option<&str>,
) -> Result<Format, DownloadError> {
    let record = manifest.part(part).ok_or_else(|| {
        let parts: Vec<&str> = manifest.parts.iter().map(|p| p.part.as_str()).collect();
        DownloadError::Invalid(format!(
            "backup {} has no part {part} (it has: {})",
            manifest.meta.name,
            parts.join(", ")
        ))
    })?;
    let format = match (record.layout, asked) {
        (PartLayout::Tree, None | Some("tar")) => Format::Tar,
        (PartLayout::Tree, Some("tar.zst")) => Format::TarZst,
        (PartLayout::Stream, None | Some("native")) => Format::Native,
        (PartLayout::Tree, Some(other)) => {
            return Err(DownloadError::Invalid(format!(
                "part {part} is a directory tree: download it as tar or tar.zst, not {other:?}"
            )));
        }
        (PartLayout::Stream, Some(other)) => {
            return Err(DownloadError::Invalid(format!(
                "part {part} is a {} dump: it downloads as its native file (format native), not {other:?}",
                record.format
            )));
        }
    };
    Ok(format)
}

/// Writes `part` of `manifest` into `file` in `format`; a regular file is synced
/// before the result is returned. A reader that stops reading for `stall` fails it.
pub async fn download(
    repo: &Repository,
    manifest: &Manifest,
    part: &str,
    format: Format,
    file: OwnedFd,
    stall: std::time::Duration,
) -> Result<Downloaded, DownloadError> {
    check_writable(&file)?;
    // Kept to sync: the output's own handle is owned by the writer.
    let synced = file.try_clone().map_err(DownloadError::Output)?;
    let (out, regular) = output::open(file, stall).map_err(DownloadError::Output)?;
    let (bytes, mut out) = write_part(repo, manifest, part, format, out).await?;
    // A write still in flight reports its error here.
    tokio::io::AsyncWriteExt::flush(&mut out)
        .await
        .map_err(DownloadError::Output)?;
    drop(out);
    // A pipe or a terminal cannot be synced, and need not be.
    if regular {
        let file = std::fs::File::from(synced);
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(|e| DownloadError::Output(std::io::Error::other(e)))?
            .map_err(DownloadError::Output)?;
    }
    Ok(Downloaded::of(manifest, part, format, bytes))
}

impl Downloaded {
    pub fn of(manifest: &Manifest, part: &str, format: Format, bytes: u64) -> Downloaded {
        let record = manifest.part(part).expect("checked by choose_format");
        Downloaded {
            env: manifest.meta.env.clone(),
            backup: manifest.meta.name.clone(),
            part: part.to_owned(),
            format,
            dump: (record.layout == PartLayout::Stream).then(|| record.format.clone()),
            bytes,
        }
    }
}

/// Writes `part` of `manifest` to `out` in `format` (flushed, not shut down); returns
/// the bytes written and `out`.
pub async fn write_part<W>(
    repo: &Repository,
    manifest: &Manifest,
    part: &str,
    format: Format,
    mut out: W,
) -> Result<(u64, W), DownloadError>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let blocking = |out: W| Counting {
        inner: SyncIoBridge::new(out),
        bytes: 0,
    };
    let counted = match format {
        Format::Native => {
            let bytes = repo.read_stream(manifest, part, &mut out).await?;
            return Ok((bytes, out));
        }
        Format::Tar => repo.export_tar(manifest, part, blocking(out)).await?.1,
        Format::TarZst => {
            let encoder = zstd::stream::write::Encoder::new(blocking(out), TAR_ZST_LEVEL)
                .map_err(DownloadError::Output)?;
            let (_, encoder) = repo.export_tar(manifest, part, encoder).await?;
            // Finishing writes the frame's end: blocking writes, off the runtime.
            tokio::task::spawn_blocking(move || encoder.finish())
                .await
                .map_err(|e| DownloadError::Output(std::io::Error::other(e)))?
                .map_err(DownloadError::Output)?
        }
    };
    Ok((counted.bytes, counted.inner.into_inner()))
}

/// The descriptor must be open for writing.
fn check_writable(file: &OwnedFd) -> Result<(), DownloadError> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = fcntl(file, FcntlArg::F_GETFL)
        .map(OFlag::from_bits_truncate)
        .map_err(|e| DownloadError::Invalid(format!("the file passed cannot be used: {e}")))?;
    let mode = flags & OFlag::O_ACCMODE;
    if mode != OFlag::O_WRONLY && mode != OFlag::O_RDWR {
        return Err(DownloadError::Invalid(
            "the file passed is not open for writing".into(),
        ));
    }
    Ok(())
}

mod output;

/// A writer that counts the bytes written through it.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
