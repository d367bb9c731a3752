//! Exporting a tree part as a tar stream that needs no envsnap to unpack.
//!
//! POSIX/GNU tar as the `tar` crate writes it: long and non-UTF-8 names, symlinks,
//! hard links (as tar link entries to the first name), fifos, owner ids and names,
//! modes, mtimes (with sub-second precision in a PAX `mtime` record) and extended
//! attributes (PAX `SCHILY.xattr.*`, which GNU tar and bsdtar read). Holes of sparse
//! files are written as zeros. Every chunk is hash-checked before it is written.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

use super::manifest::{Manifest, PartLayout};
use super::reader::{TreeEntries, part_of};
use super::tree::{Entry, EntryKind, FileChunk};
use super::{RepoError, Repository};

impl Repository {
    /// Writes `part` of `manifest` to `out` as a tar stream, on a blocking thread (tar
    /// and compressors are synchronous writers); returns the entries written and `out`,
    /// flushed, for the caller to finish (a compressor) or sync (a file).
    pub async fn export_tar<W>(
        &self,
        manifest: &Manifest,
        part: &str,
        out: W,
    ) -> Result<(u64, W), RepoError>
    where
        W: Write + Send + 'static,
    {
        let record = part_of(manifest, part, PartLayout::Tree)?.clone();
        let reading = self.writers().begin_read().await;
        let repo = self.clone();
        let part = part.to_owned();
        tokio::task::spawn_blocking(move || {
            let written = write_tar(&repo, &record, out).map_err(|e| e.in_part(&part));
            drop(reading);
            written
        })
        .await
        .map_err(|e| RepoError::Pipeline(e.to_string()))?
    }
}

fn write_tar<W: Write>(
    repo: &Repository,
    record: &super::manifest::PartRecord,
    out: W,
) -> Result<(u64, W), RepoError> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut written = 0;
    for entry in TreeEntries::open(repo, record)? {
        let entry = entry?;
        if entry.path.is_empty() {
            continue; // the root is the directory the archive is unpacked into
        }
        append(repo, &mut builder, &entry).map_err(unwrap_io)?;
        written += 1;
    }
    let mut out = builder
        .into_inner()
        .map_err(|e| RepoError::io("tar output", e))?;
    out.flush().map_err(|e| RepoError::io("tar output", e))?;
    Ok((written, out))
}

fn unwrap_io(e: io::Error) -> RepoError {
    match e.downcast::<RepoError>() {
        Ok(repo_error) => repo_error,
        Err(e) => RepoError::io("tar output", e),
    }
}

fn append<W: Write>(
    repo: &Repository,
    builder: &mut tar::Builder<W>,
    entry: &Entry,
) -> io::Result<()> {
    let mut pax: Vec<(String, Vec<u8>)> = entry
        .xattrs
        .iter()
        .map(|x| {
            (
                format!("SCHILY.xattr.{}", String::from_utf8_lossy(&x.name)),
                x.value.clone(),
            )
        })
        .collect();
    let (seconds, nanos) = (
        entry.mtime.div_euclid(1_000_000_000),
        entry.mtime.rem_euclid(1_000_000_000),
    );
    if nanos != 0 {
        pax.push(("mtime".into(), format!("{seconds}.{nanos:09}").into_bytes()));
    }
    if !pax.is_empty() {
        builder.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), &v[..])))?;
    }
    let mut header = tar::Header::new_gnu();
    header.set_mode(entry.mode);
    header.set_uid(u64::from(entry.uid));
    header.set_gid(u64::from(entry.gid));
    header.set_mtime(seconds.max(0) as u64);
    if let Some(user) = entry.user.as_deref() {
        let _ = header.set_username(user); // too long for the field: the id still stands
    }
    if let Some(group) = entry.group.as_deref() {
        let _ = header.set_groupname(group);
    }
    let path = OsStr::from_bytes(&entry.path);
    let target = OsStr::from_bytes(entry.target.as_deref().unwrap_or_default());
    match entry.kind {
        EntryKind::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder.append_data(&mut header, path, io::empty())
        }
        EntryKind::File => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(entry.size);
            builder.append_data(
                &mut header,
                path,
                FileContent::new(repo, entry.size, &entry.chunks),
            )
        }
        EntryKind::Symlink => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, path, target)
        }
        EntryKind::Hardlink => {
            header.set_entry_type(tar::EntryType::Link);
            header.set_size(0);
            builder.append_link(&mut header, path, target)
        }
        EntryKind::Fifo => {
            header.set_entry_type(tar::EntryType::Fifo);
            header.set_size(0);
            builder.append_data(&mut header, path, io::empty())
        }
    }
}

/// A file's bytes: chunks fetched one at a time, holes as zeros.
struct FileContent<'a> {
    repo: &'a Repository,
    handle: tokio::runtime::Handle,
    chunks: std::slice::Iter<'a, FileChunk>,
    next: Option<&'a FileChunk>,
    size: u64,
    position: u64,
    current: Vec<u8>,
    current_start: u64,
}

impl<'a> FileContent<'a> {
    fn new(repo: &'a Repository, size: u64, chunks: &'a [FileChunk]) -> Self {
        let mut chunks = chunks.iter();
        let next = chunks.next();
        FileContent {
            repo,
            handle: tokio::runtime::Handle::current(),
            chunks,
            next,
            size,
            position: 0,
            current: Vec::new(),
            current_start: 0,
        }
    }
}

impl Read for FileContent<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.position >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let current_end = self.current_start + self.current.len() as u64;
        if self.position < current_end && self.position >= self.current_start {
            let from = (self.position - self.current_start) as usize;
            let n = buf.len().min(self.current.len() - from);
            buf[..n].copy_from_slice(&self.current[from..from + n]);
            self.position += n as u64;
            return Ok(n);
        }
        match self.next {
            Some(chunk) if chunk.offset <= self.position => {
                self.current = self
                    .handle
                    .block_on(self.repo.load_chunk(chunk.id))
                    .map_err(io::Error::other)?;
                self.current_start = chunk.offset;
                self.next = self.chunks.next();
                self.read(buf)
            }
            next => {
                // A hole up to the next chunk (or the end of the file).
                let hole_end = next.map_or(self.size, |c| c.offset).min(self.size);
                let n = buf.len().min((hole_end - self.position) as usize);
                buf[..n].fill(0);
                self.position += n as u64;
                Ok(n)
            }
        }
    }
}
