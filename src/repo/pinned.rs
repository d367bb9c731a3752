//! Paths inside a restore target that cannot be redirected.
//!
//! A restore runs as root in directories other users may write (an app's uploads).
//! Such a user could swap a directory for a symlink between the restore's plan and
//! its writes, and a path like `target/uploads/x` would then lead root anywhere. So
//! every entry the restore changes is reached as a [`Place`]: a directory descriptor,
//! opened one component at a time with `O_NOFOLLOW` from the target's own descriptor,
//! and a final name, used with calls that take a directory descriptor and do not
//! follow a final symlink (`mkdirat`, `renameat`, `unlinkat`, `linkat`, `fstatat`).
//! Metadata is set through a descriptor of the entry itself ([`Node`]), opened with
//! `O_NOFOLLOW`: a symlink there can never lead a chmod, chown or setxattr elsewhere.
//!
//! The staging directory is pinned the same way ([`Pinned::stage`]): created by root,
//! opened without following, checked to be root's own 0700 directory, and used only
//! through its descriptor. Paths of the form `/proc/self/fd/DIR/NAME` (resolved by
//! the kernel to the directory already opened, never to a path again) serve the few
//! calls without a descriptor form: removing a whole tree, a symlink's xattrs.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat};

/// An open directory.
pub struct Pinned {
    fd: OwnedFd,
}

const DIRECTORY: OFlag = OFlag::O_PATH
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl Pinned {
    /// Opens the restore target (a configured path: a symlink there is the operator's
    /// own, e.g. a `current` release link, and is followed).
    pub fn target(path: &Path) -> std::io::Result<Pinned> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = openat(AT_FDCWD, path, flags, Mode::empty())?;
        Ok(Pinned { fd })
    }

    /// Creates `name` in this directory as a private staging directory and opens it;
    /// refuses anything that is not root's (our own) empty 0700 directory once
    /// opened. A setgid target passes its bit down to new directories and a default
    /// ACL its entries: both are taken off, or every staged entry would inherit them.
    pub fn stage(&self, name: &str) -> std::io::Result<Pinned> {
        nix::sys::stat::mkdirat(&self.fd, name, Mode::from_bits_truncate(0o700))?;
        let stage = Pinned {
            fd: openat(&self.fd, name, DIRECTORY, Mode::empty())?,
        };
        if fstat(&stage.fd)?.st_mode & libc::S_ISGID != 0 {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(stage.path(), std::fs::Permissions::from_mode(0o700))?;
        }
        for acl in ["system.posix_acl_default", "system.posix_acl_access"] {
            let _ = xattr::remove(stage.path(), acl);
        }
        stage.check_new_stage()?;
        Ok(stage)
    }

    /// A new stage must be our own empty 0700 directory: another root-owned 0700
    /// directory renamed onto the name before it was opened would be emptied at the
    /// end of the restore.
    fn check_new_stage(&self) -> std::io::Result<()> {
        let stat = fstat(&self.fd)?;
        let private =
            stat.st_uid == nix::unistd::geteuid().as_raw() && stat.st_mode & 0o7777 == 0o700;
        if !private || std::fs::read_dir(self.path())?.next().is_some() {
            return Err(std::io::Error::other(
                "the staging directory was replaced while the restore created it",
            ));
        }
        Ok(())
    }

    /// The directory `name` of this one, opened without following, if it is our
    /// own 0700 directory (a stage a killed restore left): nobody else can have put
    /// anything in it.
    pub fn own_private_dir(&self, name: &OsStr) -> Option<Pinned> {
        let fd = openat(&self.fd, name, DIRECTORY, Mode::empty()).ok()?;
        let stat = fstat(&fd).ok()?;
        let ours = stat.st_uid == nix::unistd::geteuid().as_raw() && stat.st_mode & 0o777 == 0o700;
        ours.then_some(Pinned { fd })
    }

    /// Another descriptor of this directory.
    pub fn try_clone(&self) -> std::io::Result<Pinned> {
        Ok(Pinned {
            fd: self.fd.try_clone()?,
        })
    }

    /// This directory's name for path calls: `/proc/self/fd/N/.`, the directory
    /// itself rather than the descriptor's link.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/.", self.fd.as_raw_fd()))
    }

    fn child(&self, name: &[u8], shown: &[u8]) -> std::io::Result<Pinned> {
        let fd = openat(&self.fd, OsStr::from_bytes(name), DIRECTORY, Mode::empty()).map_err(
            |e| match e {
                nix::Error::ELOOP | nix::Error::ENOTDIR => std::io::Error::other(format!(
                    "{} is no longer a directory (replaced by a symlink or file during the restore)",
                    String::from_utf8_lossy(shown)
                )),
                other => other.into(),
            },
        )?;
        Ok(Pinned { fd })
    }

    // Calls by a name relative to this directory. For the stage only: its inner
    // directories are root's own, so a relative name cannot be redirected there
    // (a restore's tree never puts an entry below a symlink of its own: plan.rs).

    pub fn mkdir(&self, name: &(impl AsRef<OsStr> + ?Sized)) -> std::io::Result<()> {
        nix::sys::stat::mkdirat(&self.fd, name.as_ref(), Mode::from_bits_truncate(0o700))
            .map_err(Into::into)
    }

    /// Opens the file `name` (with `O_NOFOLLOW`; created 0600 with `O_CREAT`).
    pub fn open_file(
        &self,
        name: &(impl AsRef<OsStr> + ?Sized),
        flags: OFlag,
    ) -> std::io::Result<File> {
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(
            &self.fd,
            name.as_ref(),
            flags,
            Mode::from_bits_truncate(0o600),
        )?;
        Ok(File::from(fd))
    }

    pub fn symlink(
        &self,
        target: &OsStr,
        name: &(impl AsRef<OsStr> + ?Sized),
    ) -> std::io::Result<()> {
        nix::unistd::symlinkat(target, &self.fd, name.as_ref()).map_err(Into::into)
    }

    pub fn mkfifo(&self, name: &(impl AsRef<OsStr> + ?Sized)) -> std::io::Result<()> {
        nix::unistd::mkfifoat(&self.fd, name.as_ref(), Mode::from_bits_truncate(0o600))
            .map_err(Into::into)
    }

    /// Moves `name` of this directory to the same name in `to`, never replacing
    /// anything there (`RENAME_NOREPLACE`: what is there is another writer's).
    pub fn move_new(
        &self,
        name: &(impl AsRef<OsStr> + ?Sized),
        to: &Pinned,
    ) -> std::io::Result<()> {
        let name = name.as_ref();
        let flags = nix::fcntl::RenameFlags::RENAME_NOREPLACE;
        match nix::fcntl::renameat2(&self.fd, name, &to.fd, name, flags) {
            Err(nix::Error::EINVAL | nix::Error::ENOSYS | nix::Error::EPERM) => {
                self.move_new_without_flag(name, to)
            }
            other => other,
        }
        .map_err(Into::into)
    }

    /// [`Pinned::move_new`] where the kernel or filesystem lacks `RENAME_NOREPLACE`
    /// (NFS, some FUSE filesystems, old kernels, seccomp profiles). A file, link or
    /// fifo is hard-linked (which fails if the name is taken) and unlinked here; a
    /// directory is renamed once the name is seen free, so another writer taking the
    /// name in that instant would be replaced.
    fn move_new_without_flag(&self, name: &OsStr, to: &Pinned) -> nix::Result<()> {
        match nix::unistd::linkat(&self.fd, name, &to.fd, name, AtFlags::empty()) {
            Ok(()) => {
                let flags = nix::unistd::UnlinkatFlags::NoRemoveDir;
                return nix::unistd::unlinkat(&self.fd, name, flags);
            }
            Err(nix::Error::EEXIST) => return Err(nix::Error::EEXIST),
            Err(_) => {} // a directory, or a filesystem without hard links
        }
        match fstatat(&to.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(nix::Error::ENOENT) => nix::fcntl::renameat(&self.fd, name, &to.fd, name),
            Ok(_) => Err(nix::Error::EEXIST),
            Err(e) => Err(e),
        }
    }

    /// The entry `name`, opened for setting its metadata.
    pub fn node(&self, name: &(impl AsRef<OsStr> + ?Sized)) -> std::io::Result<Node> {
        let name = name.as_ref();
        Node::open(self.fd.as_fd(), name, || {
            let mut path = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
            path.push(name);
            path
        })
    }

    /// Removes the now empty directory `name` of this one (a stage, at the end).
    pub fn remove_dir(&self, name: &(impl AsRef<OsStr> + ?Sized)) -> std::io::Result<()> {
        let flags = nix::unistd::UnlinkatFlags::RemoveDir;
        nix::unistd::unlinkat(&self.fd, name.as_ref(), flags)?;
        Ok(())
    }
}

/// An entry of the target: its directory, held open, and its name there. The target
/// itself is `.` in the target's descriptor.
pub struct Place {
    dir: Rc<Pinned>,
    name: OsString,
}

impl Place {
    fn dir(&self) -> BorrowedFd<'_> {
        self.dir.fd.as_fd()
    }

    /// A path naming the entry for calls without a descriptor form (removing a whole
    /// tree, extended attributes of a symlink): `/proc/self/fd/DIR/NAME`.
    pub fn path(&self) -> PathBuf {
        let mut path = PathBuf::from(format!("/proc/self/fd/{}", self.dir.fd.as_raw_fd()));
        path.push(&self.name);
        path
    }

    /// Its metadata, not following a symlink; None if it does not exist.
    pub fn stat(&self) -> std::io::Result<Option<FileStat>> {
        match fstatat(
            self.dir(),
            self.name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(stat) => Ok(Some(stat)),
            Err(nix::Error::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn mkdir(&self, mode: u32) -> std::io::Result<()> {
        nix::sys::stat::mkdirat(
            self.dir(),
            self.name.as_os_str(),
            Mode::from_bits_truncate(mode),
        )
        .map_err(Into::into)
    }

    /// Removes a file, symlink or fifo (never following it).
    pub fn unlink(&self) -> std::io::Result<()> {
        let flags = nix::unistd::UnlinkatFlags::NoRemoveDir;
        nix::unistd::unlinkat(self.dir(), self.name.as_os_str(), flags).map_err(Into::into)
    }

    /// Moves `name` of the stage here, replacing what is here.
    pub fn rename_from(
        &self,
        stage: &Pinned,
        name: &(impl AsRef<OsStr> + ?Sized),
    ) -> std::io::Result<()> {
        nix::fcntl::renameat(&stage.fd, name.as_ref(), self.dir(), self.name.as_os_str())
            .map_err(Into::into)
    }

    /// Makes `name` of the stage another name of this entry.
    pub fn link_to(
        &self,
        stage: &Pinned,
        name: &(impl AsRef<OsStr> + ?Sized),
    ) -> std::io::Result<()> {
        let flags = AtFlags::empty();
        nix::unistd::linkat(
            self.dir(),
            self.name.as_os_str(),
            &stage.fd,
            name.as_ref(),
            flags,
        )
        .map_err(Into::into)
    }

    /// Opens the entry itself for setting its metadata.
    pub fn node(&self) -> std::io::Result<Node> {
        Node::open(self.dir(), &self.name, || self.path())
    }
}

/// Resolves entry paths of a restore below a pinned target. It keeps the chain of
/// directories down to the last parent open: entries come in tree order, so each
/// directory is opened once.
pub struct Resolver<'a> {
    root: &'a Pinned,
    /// (path relative to the target, directory), outermost first.
    chain: Vec<(Vec<u8>, Rc<Pinned>)>,
}

impl<'a> Resolver<'a> {
    pub fn new(root: &'a Pinned) -> Self {
        Resolver {
            root,
            chain: Vec::new(),
        }
    }

    /// The entry at `rel` (relative to the target; empty for the target itself).
    pub fn place(&mut self, rel: &[u8]) -> std::io::Result<Place> {
        if rel.is_empty() {
            let root = Pinned {
                fd: self.root.fd.try_clone()?,
            };
            return Ok(Place {
                dir: Rc::new(root),
                name: OsString::from("."),
            });
        }
        let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(slash) => (&rel[..slash], &rel[slash + 1..]),
            None => (&rel[..0], rel),
        };
        let dir = self.directory(parent)?;
        Ok(Place {
            dir,
            name: OsStr::from_bytes(name).to_owned(),
        })
    }

    /// The directory `rel`, opened from the deepest open ancestor down.
    fn directory(&mut self, rel: &[u8]) -> std::io::Result<Rc<Pinned>> {
        let is_within = |ancestor: &[u8]| {
            rel == ancestor || (rel.starts_with(ancestor) && rel.get(ancestor.len()) == Some(&b'/'))
        };
        while let Some((known, _)) = self.chain.last() {
            if is_within(known) {
                break;
            }
            self.chain.pop();
        }
        let (mut done, mut dir) = match self.chain.last() {
            Some((known, dir)) => (known.len(), dir.clone()),
            None => (
                0,
                Rc::new(Pinned {
                    fd: self.root.fd.try_clone()?,
                }),
            ),
        };
        while done < rel.len() {
            let start = if done == 0 { 0 } else { done + 1 };
            let end = rel[start..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(rel.len(), |n| start + n);
            dir = Rc::new(dir.child(&rel[start..end], &rel[..end])?);
            self.chain.push((rel[..end].to_vec(), dir.clone()));
            done = end;
        }
        Ok(dir)
    }
}

/// One entry opened without following it, to set its metadata. Files, directories
/// and fifos are opened for reading and changed through the descriptor (fchown,
/// fchmod, f*xattr, futimens); a symlink cannot be opened so, and is changed by a
/// path whose directory is pinned and whose final name is never followed (lchown,
/// `l*` xattr calls, utimensat with NOFOLLOW; a symlink has no mode).
pub enum Node {
    Open { file: File, stat: FileStat },
    Symlink { path: PathBuf, stat: FileStat },
}

const ENTRY: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_CLOEXEC);

impl Node {
    fn open(
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: impl FnOnce() -> PathBuf,
    ) -> std::io::Result<Node> {
        match openat(dir, name, ENTRY, Mode::empty()) {
            Ok(fd) => {
                let stat = fstat(&fd)?;
                Ok(Node::Open {
                    file: File::from(fd),
                    stat,
                })
            }
            Err(nix::Error::ELOOP) => {
                let stat = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
                Ok(Node::Symlink { path: path(), stat })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A file this restore just created and wrote, through the descriptor it wrote
    /// with: no second open to give it its metadata.
    pub fn created(file: File) -> std::io::Result<Node> {
        let stat = fstat(&file)?;
        Ok(Node::Open { file, stat })
    }

    pub fn stat(&self) -> &FileStat {
        match self {
            Node::Open { stat, .. } | Node::Symlink { stat, .. } => stat,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A directory swapped for a symlink after the restore looked at it leads nowhere
    /// outside: resolving through it fails, and a directory opened before the swap
    /// still is the original one.
    #[test]
    fn a_directory_swapped_for_a_symlink_cannot_redirect_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (target, outside) = (dir.path().join("target"), dir.path().join("outside"));
        std::fs::create_dir_all(target.join("uploads/deeper")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("x"), "victim").unwrap();

        let root = Pinned::target(&target).unwrap();
        let mut resolver = Resolver::new(&root);
        let before = resolver.place(b"uploads/x").unwrap();
        std::fs::rename(target.join("uploads"), target.join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, target.join("uploads")).unwrap();

        std::fs::write(before.path(), "restored").unwrap();
        assert_eq!(
            std::fs::read_to_string(target.join("moved/x")).unwrap(),
            "restored"
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("x")).unwrap(),
            "victim"
        );

        let mut fresh = Resolver::new(&root);
        for rel in [&b"uploads/x"[..], b"uploads/deeper/y"] {
            let err = fresh.place(rel).err().expect("resolving through a symlink");
            assert_eq!(
                err.to_string(),
                "uploads is no longer a directory (replaced by a symlink or file during the restore)"
            );
        }
        // The chain of open directories follows tree order: siblings and cousins.
        let mut walk = Resolver::new(&root);
        for rel in [
            &b"moved/deeper/a"[..],
            b"moved/b",
            b"moved/deeper/c",
            b"top",
        ] {
            walk.place(rel).unwrap();
        }
    }

    #[test]
    fn a_symlink_entry_is_never_opened_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "x").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("link")).unwrap();
        let root = Pinned::target(dir.path()).unwrap();
        let mut resolver = Resolver::new(&root);
        let link = resolver.place(b"link").unwrap().node().unwrap();
        assert!(matches!(link, Node::Symlink { .. }));
        let file = resolver.place(b"victim").unwrap().node().unwrap();
        let Node::Open { file, .. } = file else {
            panic!("a file opens")
        };
        file.set_permissions(std::fs::Permissions::from_mode(0o640))
            .unwrap();
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    /// Moving a finished entry out of the stage never replaces what another writer
    /// put at that name meanwhile.
    #[test]
    fn a_move_out_of_the_stage_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let root = Pinned::target(dir.path()).unwrap();
        let stage = root.stage(".envsnap-stage-move").unwrap();
        std::fs::write(stage.path().join("ours"), "restored").unwrap();
        std::fs::write(dir.path().join("ours"), "someone else's").unwrap();
        let err = stage.move_new("ours", &root).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ours")).unwrap(),
            "someone else's"
        );
        std::fs::remove_file(dir.path().join("ours")).unwrap();
        stage.move_new("ours", &root).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ours")).unwrap(),
            "restored"
        );
    }

    /// Without RENAME_NOREPLACE a file still never replaces (a hard link fails on a
    /// taken name) and a directory moves when its name is free.
    #[test]
    fn the_move_without_the_kernel_flag_never_replaces_either() {
        let dir = tempfile::tempdir().unwrap();
        let root = Pinned::target(dir.path()).unwrap();
        let stage = root.stage(".envsnap-stage-flagless").unwrap();
        std::fs::write(stage.path().join("file"), "restored").unwrap();
        std::fs::create_dir(stage.path().join("dir")).unwrap();
        std::fs::write(dir.path().join("file"), "someone else's").unwrap();
        let taken = stage.move_new_without_flag(OsStr::new("file"), &root);
        assert_eq!(taken, Err(nix::Error::EEXIST));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("file")).unwrap(),
            "someone else's"
        );
        std::fs::remove_file(dir.path().join("file")).unwrap();
        for name in ["file", "dir"] {
            stage
                .move_new_without_flag(OsStr::new(name), &root)
                .unwrap();
            assert!(!stage.path().join(name).exists(), "{name} left the stage");
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("file")).unwrap(),
            "restored"
        );
        assert!(dir.path().join("dir").is_dir());
    }

    /// A setgid target passes its bit to new directories: the stage takes it off
    /// rather than refusing the restore; a directory that is not empty (another one
    /// renamed onto the stage's name) is refused.
    #[test]
    fn a_stage_in_a_setgid_directory_is_private_and_a_full_one_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o2775)).unwrap();
        let root = Pinned::target(dir.path()).unwrap();
        root.stage(".envsnap-stage-sgid").unwrap();
        let meta = std::fs::metadata(dir.path().join(".envsnap-stage-sgid")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700);

        let full = tempfile::tempdir().unwrap();
        std::fs::set_permissions(full.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let opened = Pinned {
            fd: openat(AT_FDCWD, full.path(), DIRECTORY, Mode::empty()).unwrap(),
        };
        assert!(opened.check_new_stage().is_ok(), "empty and private");
        std::fs::write(full.path().join("precious"), "x").unwrap();
        let err = opened.check_new_stage().unwrap_err();
        assert_eq!(
            err.to_string(),
            "the staging directory was replaced while the restore created it"
        );
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
        assert!(
            root.stage(".envsnap-stage-test").is_err(),
            "an existing name is refused"
        );
    }
}
