//! The regular files of an imported archive, written sparse and within a budget.
//!
//! A few kilobytes of gzip can claim gigabytes of zeros. So a file's body is read
//! in blocks and a block of zeros is never written: the file offset skips it, and
//! the file's length is set at the end, so runs of zeros (trailing ones too) become
//! holes. Such a file takes no room in staging, is backed up as holes (the archiver
//! finds them with `SEEK_HOLE`) and restored sparse.
//!
//! The [`Budget`] bounds what an archive may take: everything it unpacks to, zeros
//! included, within `import.max_size` (each entry's size claimed before its body is
//! read), and the staging filesystem never left with
//! less than [`RESERVE`] free. It is checked before the first byte is written and
//! again every [`CHECK_EVERY`] bytes written, so an archive that does not fit is
//! refused before the disk fills, not after.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The unit of zero detection.
const BLOCK: usize = 64 * 1024;
/// Bytes written between two looks at the staging filesystem's free room.
const CHECK_EVERY: u64 = 64 << 20;
/// Room the staging filesystem keeps free whatever an archive holds.
pub const RESERVE: u64 = 256 << 20;

/// What an archive may still take (see the module's documentation).
pub struct Budget {
    /// A directory on the staging filesystem.
    staging: PathBuf,
    max_size: u64,
    unpacked: u64,
    written_since_check: u64,
}

impl Budget {
    /// A budget of `max_size` unpacked bytes; fails if the staging filesystem is
    /// already short of room.
    pub fn new(staging: &Path, max_size: u64) -> io::Result<Budget> {
        let budget = Budget {
            staging: staging.to_path_buf(),
            max_size,
            unpacked: 0,
            written_since_check: 0,
        };
        budget.check_room()?;
        Ok(budget)
    }

    /// `n` more bytes to unpack (written or skipped as a hole).
    fn claim(&mut self, n: u64) -> io::Result<()> {
        self.unpacked = self.unpacked.saturating_add(n);
        if self.unpacked > self.max_size {
            return Err(io::Error::other(format!(
                "the archive unpacks to more than {} (import.max_size)",
                bytesize::ByteSize(self.max_size).display().iec()
            )));
        }
        Ok(())
    }

    /// `n` more bytes written to staging.
    fn written(&mut self, n: usize) -> io::Result<()> {
        self.written_since_check += n as u64;
        if self.written_since_check >= CHECK_EVERY {
            self.written_since_check = 0;
            self.check_room()?;
        }
        Ok(())
    }

    fn check_room(&self) -> io::Result<()> {
        let stat = nix::sys::statvfs::statvfs(&self.staging)?;
        let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
        if free < RESERVE {
            return Err(io::Error::other(format!(
                "the daemon's staging filesystem has only {} free: the archive does not fit",
                bytesize::ByteSize(free).display().iec()
            )));
        }
        Ok(())
    }
}

/// Writes `body`, which must be `size` bytes long, into a new file at `target` (mode
/// 0600; the caller gives it the entry's metadata), zeros as holes. A body the
/// budget cannot hold is refused before a byte is read. `target` must not exist: a
/// leftover of the same name was removed by the caller, and a symlink planted there
/// is not followed. A body that ends early is an `UnexpectedEof` error.
pub fn write_sparse(
    body: &mut impl Read,
    size: u64,
    target: &Path,
    budget: &mut Budget,
) -> io::Result<File> {
    budget.claim(size)?;
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(target)?;
    let mut block = vec![0u8; BLOCK];
    let mut length = 0u64;
    loop {
        let n = read_block(body, &mut block)?;
        if n == 0 {
            break;
        }
        let data = &block[..n];
        if is_zero(data) {
            file.seek(SeekFrom::Current(n as i64))?;
        } else {
            file.write_all(data)?;
            budget.written(n)?;
        }
        length += n as u64;
    }
    if length != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the entry ends early",
        ));
    }
    file.set_len(length)?;
    Ok(file)
}

/// Fills `block` as far as `body` goes; fewer bytes only at its end.
fn read_block(body: &mut impl Read, block: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < block.len() {
        match body.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn is_zero(data: &[u8]) -> bool {
    // Whole words first: this runs over every byte an import brings.
    let (words, rest) = data.split_at(data.len() - data.len() % 8);
    words
        .chunks_exact(8)
        .all(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")) == 0)
        && rest.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zeros_become_holes_and_data_stays() {
        let dir = tempfile::tempdir().unwrap();
        let mut budget = Budget::new(dir.path(), 1 << 40).unwrap();
        let mut body = vec![0u8; 8 << 20];
        body[3 << 20..(3 << 20) + 5].copy_from_slice(b"hello");
        let target = dir.path().join("f");
        write_sparse(&mut body.as_slice(), 8 << 20, &target, &mut budget).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), body);
        let meta = std::fs::metadata(&target).unwrap();
        assert!(
            meta.blocks() * 512 <= 2 * BLOCK as u64,
            "{} blocks",
            meta.blocks()
        );
    }

    #[test]
    fn the_size_cap_counts_zeros_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut budget = Budget::new(dir.path(), 1 << 20).unwrap();
        let body = vec![0u8; 2 << 20];
        let target = dir.path().join("f");
        let error = write_sparse(&mut body.as_slice(), 2 << 20, &target, &mut budget).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the archive unpacks to more than 1.0 MiB (import.max_size)"
        );
        assert!(!target.exists(), "refused before anything was written");
    }

    #[test]
    fn a_planted_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let mut budget = Budget::new(dir.path(), 1 << 20).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("f")).unwrap();
        assert!(write_sparse(&mut &b"evil"[..], 4, &dir.path().join("f"), &mut budget).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }
}
