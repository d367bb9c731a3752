//! Paths inside a restore target that cannot be redirected.
//!
//! A restore runs as root in directories other users may write (an app's uploads).
//! Such a user could swap a directory for a symlink between the restore's plan and
//! its writes, and a path like `target/uploads/x` would then lead root anywhere. So
//! every path the restore changes is reached through directory descriptors opened one
//! component at a time with `O_NOFOLLOW` from the target's own descriptor, and named
//! as `/proc/self/fd/DIR/NAME`: the kernel resolves `DIR` to the directory already
//! opened, never to a path again, and the final `NAME` is handled by calls that do
//! not follow symlinks (rename, mkdir, unlink, lchown, utimensat with NOFOLLOW).
//! chmod, which follows a symlink by path, goes through an `O_PATH|O_NOFOLLOW`
//! descriptor of the entry itself ([`Entry`]), whose type is checked first
//! (extended attributes are set with the `l*` calls, which do not follow).
//!
//! The staging directory is pinned the same way ([`Pinned::stage`]): created by root,
//! opened without following, and checked to be root's own 0700 directory, so nothing
//! staged can be swapped before it is put in place.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::{Mode, fstat};

/// An open directory, named through `/proc/self/fd`.
pub struct Pinned {
    fd: OwnedFd,
}

impl Pinned {
    /// Opens the restore target (a configured path: a symlink there is the operator's
    /// own, e.g. a `current` release link, and is followed).
    pub fn target(path: &Path) -> std::io::Result<Pinned> {
        let fd = openat(
            AT_FDCWD,
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Pinned { fd })
    }

    /// Creates `name` in this directory as a private staging directory and opens it;
    /// refuses anything that is not root's (our own) 0700 directory once opened.
    pub fn stage(&self, name: &str) -> std::io::Result<Pinned> {
        nix::sys::stat::mkdirat(&self.fd, name, Mode::from_bits_truncate(0o700))?;
        let fd = openat(
            &self.fd,
            name,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let stat = fstat(&fd)?;
        if stat.st_uid != nix::unistd::geteuid().as_raw() || stat.st_mode & 0o7777 != 0o700 {
            return Err(std::io::Error::other(
                "the staging directory was replaced while the restore created it",
            ));
        }
        Ok(Pinned { fd })
    }

    /// This directory's name for path calls (`/proc/self/fd/N/.`: the directory
    /// itself, not the descriptor's link).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/.", self.fd.as_raw_fd()))
    }

    /// The directory `rel` below this one, reached without following any symlink.
    fn descend(&self, rel: &[u8]) -> std::io::Result<Pinned> {
        let mut current = self.fd.try_clone()?;
        for component in rel.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            current = openat(
                &current,
                OsStr::from_bytes(component),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| match e {
                nix::Error::ELOOP | nix::Error::ENOTDIR => std::io::Error::other(format!(
                    "{} is no longer a directory (replaced by a symlink or file during the restore)",
                    String::from_utf8_lossy(rel)
                )),
                other => other.into(),
            })?;
        }
        Ok(Pinned { fd: current })
    }

    /// Removes the now empty directory `name` of this one (a stage, at the end).
    pub fn remove_dir(&self, name: &str) -> std::io::Result<()> {
        nix::unistd::unlinkat(&self.fd, name, nix::unistd::UnlinkatFlags::RemoveDir)?;
        Ok(())
    }
}

/// Resolves entry paths of a restore below a pinned target, keeping the last parent
/// directory open (entries come in tree order, so most share it).
pub struct Resolver<'a> {
    root: &'a Pinned,
    last: Option<(Vec<u8>, Rc<Pinned>)>,
}

/// A resolved path; it keeps the directory it names through open while it lives.
pub struct PinnedPath {
    _dir: Option<Rc<Pinned>>,
    path: PathBuf,
}

impl std::ops::Deref for PinnedPath {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for PinnedPath {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl<'a> Resolver<'a> {
    pub fn new(root: &'a Pinned) -> Self {
        Resolver { root, last: None }
    }

    /// The path to use for the entry at `rel` (relative to the target; empty for the
    /// target itself): `/proc/self/fd/PARENT/NAME`.
    pub fn path(&mut self, rel: &[u8]) -> std::io::Result<PinnedPath> {
        if rel.is_empty() {
            return Ok(PinnedPath {
                _dir: None,
                path: self.root.path(),
            });
        }
        let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(slash) => (&rel[..slash], &rel[slash + 1..]),
            None => (&rel[..0], rel),
        };
        let dir = match &self.last {
            Some((known, dir)) if known == parent => dir.clone(),
            _ => {
                let dir = Rc::new(self.root.descend(parent)?);
                self.last = Some((parent.to_vec(), dir.clone()));
                dir
            }
        };
        let mut path = PathBuf::from(format!("/proc/self/fd/{}", dir.fd.as_raw_fd()));
        path.push(OsStr::from_bytes(name));
        Ok(PinnedPath {
            _dir: Some(dir),
            path,
        })
    }
}

/// One existing entry, opened without following it: its metadata as it is, and a
/// name for chmod, which would follow a symlink by path.
pub struct Entry {
    fd: OwnedFd,
    pub stat: nix::sys::stat::FileStat,
}

impl Entry {
    pub fn open(path: &Path) -> std::io::Result<Entry> {
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(AT_FDCWD, path, flags, Mode::empty())?;
        let stat = fstat(fd.as_fd())?;
        Ok(Entry { fd, stat })
    }

    pub fn is_symlink(&self) -> bool {
        self.stat.st_mode & libc::S_IFMT == libc::S_IFLNK
    }

    /// Sets the mode of exactly this inode (never a symlink's target: symlinks have
    /// no mode of their own, and are refused).
    pub fn chmod(&self, mode: u32) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if self.is_symlink() {
            return Err(std::io::Error::other("a symlink has no mode to set"));
        }
        let name = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
        std::fs::set_permissions(name, std::fs::Permissions::from_mode(mode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A directory swapped for a symlink after the restore looked at it leads nowhere
    /// outside: resolving through it fails, and a parent resolved before the swap
    /// still names the original directory.
    #[test]
    fn a_directory_swapped_for_a_symlink_cannot_redirect_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (target, outside) = (dir.path().join("target"), dir.path().join("outside"));
        std::fs::create_dir_all(target.join("uploads")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("x"), "victim").unwrap();

        let root = Pinned::target(&target).unwrap();
        let mut resolver = Resolver::new(&root);
        let before = resolver.path(b"uploads/x").unwrap();
        std::fs::rename(target.join("uploads"), target.join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, target.join("uploads")).unwrap();

        std::fs::write(&before, "restored").unwrap();
        assert_eq!(std::fs::read_to_string(target.join("moved/x")).unwrap(), "restored");
        assert_eq!(std::fs::read_to_string(outside.join("x")).unwrap(), "victim");

        let mut fresh = Resolver::new(&root);
        let err = fresh.path(b"uploads/x").err().expect("resolving through a symlink");
        assert_eq!(
            err.to_string(),
            "uploads is no longer a directory (replaced by a symlink or file during the restore)"
        );
    }

    #[test]
    fn chmod_never_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "x").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let entry = Entry::open(&link).unwrap();
        assert!(entry.is_symlink());
        assert!(entry.chmod(0o666).is_err());
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let file = Entry::open(&victim).unwrap();
        file.chmod(0o640).unwrap();
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    #[test]
    fn a_stage_is_a_private_directory_of_our_own() {
        let dir = tempfile::tempdir().unwrap();
        let root = Pinned::target(dir.path()).unwrap();
        let stage = root.stage(".envsnap-stage-test").unwrap();
        std::fs::write(stage.path().join("f"), "staged").unwrap();
        let meta = std::fs::metadata(dir.path().join(".envsnap-stage-test")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".envsnap-stage-test/f")).unwrap(),
            "staged"
        );
        assert!(root.stage(".envsnap-stage-test").is_err(), "an existing name is refused");
    }
}
