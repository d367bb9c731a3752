//! Import: archives made elsewhere, checked before anything is stored.
//!
//! An import takes, per part, a file (passed by the client) or a URL (fetched by the
//! daemon: http(s), or a store URL) in the formats a download gives: a tar archive
//! for code and files, the native dump for a database, each plain or compressed with
//! gzip or zstd (told by their magic bytes, not by names). Everything in them is
//! hostile until checked:
//!
//! - a tar archive is unpacked entry by entry into a private staging directory, and
//!   refused at the first entry with an absolute path or `..`, a symlink that points
//!   outside the part, a hard link to anything but a file earlier in the archive, a
//!   device node, or a corrupt or truncated header or body;
//! - a dump must start as its kind's dumps do (`PGDMP`, `SQLite format 3`, `REDIS`,
//!   SQL text for MariaDB) and, where the format tells its own length or end, be
//!   whole: a SQLite file as long as its header says, an RDB file ending with its
//!   end-of-file marker, a MariaDB dump ending with `-- Dump completed`;
//! - gzip and zstd streams must be complete;
//! - nothing may unpack to more than `import.max_size`, zeros included: a tar
//!   archive's regular files are written with holes for their runs of zeros, and
//!   staging never fills its filesystem (`import/sparse.rs`).
//!
//! A refusal names the part and what is wrong, in one line; the job then stores
//! nothing (`jobs/import.rs`).

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;

use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// A decompressed input.
pub type Input = Pin<Box<dyn AsyncRead + Send>>;

/// A file the client passed, as its decompressed stream.
pub async fn from_file(file: std::fs::File) -> io::Result<Input> {
    decompressed(tokio::fs::File::from_std(file)).await
}

/// The object at `url`, as its decompressed stream: `http(s)://` (query strings kept,
/// so signed links work), or a store URL (`s3://`, `gs://`, `az://`) read with the
/// daemon's store credentials (`AWS_*`, `GOOGLE_*`, `AZURE_*`). Nothing else: the
/// daemon never opens a local path for a client.
pub async fn from_url(text: &str) -> io::Result<Input> {
    use futures::TryStreamExt;
    let url = url::Url::parse(text).map_err(io::Error::other)?;
    let body: Pin<Box<dyn futures::Stream<Item = io::Result<bytes::Bytes>> + Send>> =
        match url.scheme() {
            "http" | "https" => {
                // reqwest's errors name the URL, signature and all: never passed on.
                let hide = |e: reqwest::Error| io::Error::other(e.without_url());
                let client = reqwest::Client::builder()
                    .connect_timeout(HTTP_CONNECT_TIMEOUT)
                    .read_timeout(HTTP_READ_TIMEOUT)
                    .build()
                    .map_err(hide)?;
                let response = client
                    .get(url.clone())
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(hide)?;
                Box::pin(response.bytes_stream().map_err(hide))
            }
            scheme if STORE_SCHEMES.contains(&scheme) => {
                let settings = crate::store::settings_from_env();
                let (store, path) =
                    object_store::parse_url_opts(&url, settings).map_err(io::Error::other)?;
                let found = object_store::ObjectStoreExt::get(&store, &path)
                    .await
                    .map_err(io::Error::other)?;
                Box::pin(found.into_stream().map_err(io::Error::other))
            }
            other => {
                return Err(io::Error::other(format!(
                    "unsupported URL scheme {other:?}"
                )));
            }
        };
    decompressed(tokio_util::io::StreamReader::new(body)).await
}

/// An http(s) source must connect within this time, and then never go this long
/// without sending: a stalled server fails the import instead of holding it forever.
const HTTP_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const HTTP_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The URL schemes an import may name: web and object stores, never local files.
pub const URL_SCHEMES: &[&str] = &[
    "http", "https", "s3", "s3a", "gs", "az", "azure", "abfs", "abfss",
];
const STORE_SCHEMES: &[&str] = &["s3", "s3a", "gs", "az", "azure", "abfs", "abfss"];

/// `reader` as its decompressed stream: gzip and zstd by their magic bytes, else as is.
async fn decompressed(reader: impl AsyncRead + Send + Unpin + 'static) -> io::Result<Input> {
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let head = reader.fill_buf().await?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        let mut decoder = GzipDecoder::new(reader);
        decoder.multiple_members(true);
        Box::pin(decoder)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut decoder = ZstdDecoder::new(reader);
        decoder.multiple_members(true);
        Box::pin(decoder)
    } else {
        Box::pin(reader)
    })
}

// ------------------------------------------------------------------------- tar --

/// How an archive is unpacked.
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    /// With an owner (an import by someone other than root), every entry becomes that
    /// user's and group's, setuid and setgid bits are dropped and extended attributes
    /// left out: an archive from a user can never plant a setuid-root file or a
    /// capability.
    pub owner: Option<(u32, u32)>,
    /// Root's imports drop setuid and setgid bits too unless this is set: an archive
    /// from elsewhere is not trusted to make setuid-root files by default.
    pub keep_setuid: bool,
    /// The most the archive may unpack to (`import.max_size`).
    pub max_size: u64,
}

/// Unpacks the tar archive `input` into `root` (a new, private directory), checking
/// every entry first; returns the number of entries.
pub async fn unpack_tar(
    input: Input,
    root: PathBuf,
    options: UnpackOptions,
) -> Result<u64, String> {
    tokio::task::spawn_blocking(move || {
        let reader = tokio_util::io::SyncIoBridge::new(input);
        unpack(reader, &root, options)
    })
    .await
    .map_err(|e| format!("unpacking stopped: {e}"))?
}

fn unpack(reader: impl Read, root: &Path, options: UnpackOptions) -> Result<u64, String> {
    let UnpackOptions {
        owner, keep_setuid, ..
    } = options;
    let mut budget = sparse::Budget::new(root, options.max_size).map_err(|e| e.to_string())?;
    // Extension headers over a limit are refused before the tar crate buffers them.
    let mut archive = tar::Archive::new(headers::ExtensionGuard::new(reader));
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(owner.is_none());
    archive.set_unpack_xattrs(owner.is_none());
    archive.set_preserve_mtime(true);
    let corrupt =
        |e: io::Error| format!("the archive is corrupt or truncated: {}", with_causes(&e));
    let mut seen = Seen::default();
    let mut directories = Vec::new();
    let mut root_meta: Option<(tar::Header, (i64, i64))> = None;
    let mut count = 0;
    // The last entry read, to say where a truncated archive ends.
    let mut last: Option<String> = None;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(|e| match (&last, is_short_read(&e)) {
            (Some(last), true) => format!("the archive is truncated after entry {last}"),
            _ => corrupt(e),
        })?;
        let raw = entry.path().map_err(corrupt)?.into_owned();
        let path = inside_path(&raw)
            .ok_or_else(|| format!("entry {} leaves the part (absolute or ..)", raw.display()))?;
        admit_entry(&entry, &path, &mut seen)?;
        last = Some(crate::message::one_line(&path.display().to_string()));
        let shown = path.display();
        let mtime = precise_mtime(&mut entry);
        if path.as_os_str().is_empty() {
            // The root: the part's own directory; its metadata is applied last.
            root_meta = Some((entry.header().clone(), mtime));
            continue;
        }
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::Fifo {
            // The tar crate would write a fifo as an empty regular file.
            make_fifo(root, &path, entry.header(), owner.is_none())?;
        } else if kind.is_file() || kind == tar::EntryType::GNUSparse {
            unpack_file(&mut entry, root, &path, owner.is_none(), &mut budget)
                .map_err(|e| unpack_problem(&e, root, &shown))?;
        } else {
            let unpacked = entry
                .unpack_in(root)
                .map_err(|e| unpack_problem(&e, root, &shown))?;
            if !unpacked {
                return Err(format!("entry {shown} leaves the part"));
            }
        }
        match owner {
            Some(owner) => make_theirs(root, &path, entry.header(), owner)?,
            None if !keep_setuid => drop_setid(root, &path, entry.header())?,
            None => {}
        }
        // The tar crate sets whole seconds; a PAX record may hold nanoseconds.
        match entry.header().entry_type() {
            tar::EntryType::Directory => directories.push((path, mtime)),
            _ => set_mtime(&root.join(&path), mtime),
        }
        count += 1;
    }
    // Creating entries inside directories changed their times: set them last.
    for (dir, mtime) in directories.iter().rev() {
        set_mtime(&root.join(dir), *mtime);
    }
    if let Some((header, mtime)) = root_meta {
        apply_root_metadata(root, &header, mtime, owner, keep_setuid)?;
    }
    Ok(count)
}

/// A regular file entry written by [`sparse::write_sparse`] (the tar crate writes
/// every zero), then given the entry's mode and, for root's import (`own`), its
/// owner and extended attributes. A later entry of the same path replaces an earlier
/// file, as tar does; no symlink lies above it (`admit_entry`).
fn unpack_file<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    root: &Path,
    path: &Path,
    own: bool,
    budget: &mut sparse::Budget,
) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let target = root.join(path);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(&target) {
        Ok(meta) if meta.is_dir() => {
            return Err(io::Error::other("a file cannot replace a directory"));
        }
        Ok(_) => std::fs::remove_file(&target)?,
        Err(_) => {}
    }
    let header = entry.header().clone();
    let size = entry.size();
    let file = sparse::write_sparse(entry, size, &target, budget)?;
    if own && nix::unistd::geteuid().is_root() {
        std::os::unix::fs::fchown(
            &file,
            Some(header.uid()? as u32),
            Some(header.gid()? as u32),
        )?;
    }
    // After the owner: changing the owner clears setuid bits.
    file.set_permissions(std::fs::Permissions::from_mode(header.mode()? & 0o7777))?;
    if own {
        set_xattrs(entry, &file)?;
    }
    Ok(())
}

/// The entry's extended attributes (PAX `SCHILY.xattr.NAME` records) set on `file`.
fn set_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, file: &std::fs::File) -> io::Result<()> {
    use xattr::FileExt;
    let Some(extensions) = entry.pax_extensions()? else {
        return Ok(());
    };
    for extension in extensions {
        let extension = extension?;
        let Ok(key) = extension.key() else { continue };
        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
            file.set_xattr(name, extension.value_bytes())?;
        }
    }
    Ok(())
}

/// What the archive has shown so far: regular files (the only hard-link targets)
/// and symlinks (nothing may lie below one).
#[derive(Default)]
struct Seen {
    files: HashSet<PathBuf>,
    symlinks: HashSet<PathBuf>,
}

/// Refuses an entry that would leave the part or that a part may not hold: one
/// below a symlink, a symlink pointing outside, a hard link to anything but an
/// earlier file, a device node, an unknown type.
fn admit_entry<R: Read>(
    entry: &tar::Entry<'_, R>,
    path: &Path,
    seen: &mut Seen,
) -> Result<(), String> {
    let shown = path.display();
    if let Some(link) = path
        .ancestors()
        .skip(1)
        .find(|a| seen.symlinks.contains(*a))
    {
        return Err(format!(
            "entry {shown} lies below symlink {}",
            link.display()
        ));
    }
    use tar::EntryType::*;
    match entry.header().entry_type() {
        Regular | Continuous | GNUSparse => {
            seen.files.insert(path.to_path_buf());
        }
        Directory => {}
        Symlink => {
            let target = link_target(entry, &shown)?;
            if !symlink_stays_inside(path, &target, &seen.symlinks) {
                return Err(format!(
                    "symlink {shown} points outside the part (to {})",
                    target.display()
                ));
            }
            seen.symlinks.insert(path.to_path_buf());
        }
        Link => {
            let target = link_target(entry, &shown)?;
            if !inside_path(&target).is_some_and(|t| seen.files.contains(&t)) {
                return Err(format!(
                    "hard link {shown} does not point to a file earlier in the archive (to {})",
                    target.display()
                ));
            }
        }
        Fifo => {}
        Char | Block => return Err(format!("entry {shown} is a device node")),
        other => return Err(format!("entry {shown} has an unsupported type ({other:?})")),
    }
    Ok(())
}

/// An entry's mtime as (seconds, nanoseconds): the PAX `mtime` record when there is
/// one (our downloads and GNU tar --posix write it), else the header's seconds.
fn precise_mtime<R: Read>(entry: &mut tar::Entry<'_, R>) -> (i64, i64) {
    let seconds = entry.header().mtime().unwrap_or(0) as i64;
    let pax = entry.pax_extensions().ok().flatten().and_then(|records| {
        let record = records.flatten().find(|r| r.key() == Ok("mtime"))?;
        let text = record.value().ok()?;
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits: String = fraction.chars().take(9).collect();
        let nanos = format!("{digits:0<9}").parse::<i64>().ok()?;
        Some((whole.parse::<i64>().ok()?, nanos))
    });
    pax.unwrap_or((seconds, 0))
}

fn set_mtime(path: &Path, (seconds, nanos): (i64, i64)) {
    let time = nix::sys::time::TimeSpec::new(seconds, nanos);
    let _ = nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &time,
        &time,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
}

/// The archive's own root entry (`./`) describes the part's directory: its mode,
/// owner (when run as root) and time.
fn apply_root_metadata(
    root: &Path,
    header: &tar::Header,
    mtime: (i64, i64),
    owner: Option<(u32, u32)>,
    keep_setuid: bool,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |e: io::Error| format!("the archive's root entry: {}", with_causes(&e));
    let mask = if owner.is_none() && keep_setuid {
        0o7777
    } else {
        0o1777
    };
    let mode = header.mode().map_err(bad)? & mask;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode)).map_err(bad)?;
    let (uid, gid) = match owner {
        Some(owner) => owner,
        None => (
            header.uid().map_err(bad)? as u32,
            header.gid().map_err(bad)? as u32,
        ),
    };
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(root, Some(uid), Some(gid)).map_err(bad)?;
    }
    set_mtime(root, mtime);
    Ok(())
}

/// An error and its causes on one line (the tar crate puts the reason in a cause).
/// What went wrong unpacking entry `shown`, in the archive's terms: a short read is
/// a truncated archive; other errors are told without the staging directory's path.
fn unpack_problem(error: &io::Error, root: &Path, shown: &impl std::fmt::Display) -> String {
    let text = with_causes(error);
    if is_short_read(error) {
        return format!("the archive is truncated at entry {shown}");
    }
    let staging = root.display().to_string();
    format!(
        "cannot unpack entry {shown}: {}",
        text.replace(&format!("`{staging}/"), "`")
            .replace(&staging, "")
    )
}

/// Whether the archive ended where more was due.
fn is_short_read(error: &io::Error) -> bool {
    let text = with_causes(error);
    error.kind() == io::ErrorKind::UnexpectedEof
        || text.contains("failed to write entire file")
        || text.contains("unexpected end of file")
        || text.contains("unexpected EOF")
}

fn with_causes(error: &io::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error)
        .or_else(|| error.get_ref().and_then(|inner| inner.source()));
    while let Some(inner) = cause {
        text = format!("{text}: {inner}");
        cause = inner.source();
    }
    text
}

fn link_target<R: Read>(
    entry: &tar::Entry<'_, R>,
    shown: &impl std::fmt::Display,
) -> Result<PathBuf, String> {
    entry
        .link_name()
        .map_err(|e| format!("entry {shown}: unreadable link target: {e}"))?
        .map(|t| t.into_owned())
        .ok_or_else(|| format!("link {shown} has no target"))
}

/// `path` as a relative path inside the part (`./` and `.` dropped), or None if it is
/// absolute or climbs with `..`.
fn inside_path(path: &Path) -> Option<PathBuf> {
    let mut inside = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => inside.push(name),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => return None,
        }
    }
    Some(inside)
}

/// Whether a symlink at `link` (inside the part) to `target` resolves inside it,
/// judged lexically, and never through one of the archive's `symlinks` (whose own
/// target would change where the rest leads).
fn symlink_stays_inside(link: &Path, target: &Path, symlinks: &HashSet<PathBuf>) -> bool {
    let mut resolved: PathBuf = link.parent().map(Path::to_path_buf).unwrap_or_default();
    for component in target.components() {
        match component {
            Component::Normal(name) => {
                resolved.push(name);
                if symlinks.contains(&resolved) {
                    return false;
                }
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if !resolved.pop() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// An entry of a user's import becomes theirs: owner, group, no setuid/setgid bits.
/// The staging directory is root's alone, so nothing can swap the entry meanwhile.
fn make_theirs(
    root: &Path,
    entry: &Path,
    header: &tar::Header,
    (uid, gid): (u32, u32),
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |e: io::Error| format!("entry {}: {e}", entry.display());
    let path = &root.join(entry);
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(bad)?;
    let kind = header.entry_type();
    if kind.is_file() || kind.is_dir() {
        let mode = header.mode().map_err(bad)? & 0o1777;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(bad)?;
    }
    Ok(())
}

/// A fifo entry made as a fifo (the tree keeps its type), with its mode and, for
/// root's import, its owner. Its parents are made as directories; no symlink lies
/// above it (`admit_entry`), and the staging directory is root's alone.
fn make_fifo(root: &Path, path: &Path, header: &tar::Header, own: bool) -> Result<(), String> {
    let full = root.join(path);
    let bad = |e: io::Error| format!("cannot unpack fifo {}: {e}", path.display());
    if let Some(parent) = full.parent() {
        std::fs::create_dir_all(parent).map_err(bad)?;
    }
    let mode = header.mode().map_err(bad)? & 0o777;
    nix::unistd::mkfifo(&full, nix::sys::stat::Mode::from_bits_truncate(mode))
        .map_err(|e| bad(e.into()))?;
    // mkfifo is subject to the umask: the archive's mode, exactly.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode)).map_err(bad)?;
    if own && nix::unistd::geteuid().is_root() {
        let (uid, gid) = (header.uid().map_err(bad)?, header.gid().map_err(bad)?);
        std::os::unix::fs::lchown(&full, Some(uid as u32), Some(gid as u32)).map_err(bad)?;
    }
    Ok(())
}

/// An entry of root's import without its setuid and setgid bits (files and
/// directories; a symlink has no mode of its own).
fn drop_setid(root: &Path, entry: &Path, header: &tar::Header) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |e: io::Error| format!("entry {}: {e}", entry.display());
    let path = &root.join(entry);
    let kind = header.entry_type();
    let mode = header.mode().map_err(bad)?;
    if (kind.is_file() || kind.is_dir()) && mode & 0o6000 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o1777))
            .map_err(bad)?;
    }
    Ok(())
}

mod dump;
mod headers;
mod sparse;

pub use dump::checked_dump;
#[cfg(test)]
mod tests;
