//! Setting one restored entry's metadata: owner, mode, extended attributes, mtime.
//!
//! Everything goes through a [`Node`] (`pinned.rs`): the entry's own descriptor, or
//! for a symlink a path whose final name is never followed. With `fresh` false (an
//! entry kept from before the restore) only what differs is changed, so unchanged
//! files keep their ctime and the next backup still recognises them.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;

use nix::sys::stat::{UtimensatFlags, futimens, utimensat};
use nix::sys::time::TimeSpec;
use xattr::FileExt;

use super::pinned::Node;
use super::tree::{Entry, EntryKind, Xattr};

/// Looks up owner names on this host; chown only works (and is only tried) as root.
pub struct Owners {
    pub(super) is_root: bool,
    // Name lookups read /etc/passwd and /etc/group: once per name, not per entry.
    // Shared by the threads that write a restore's files.
    users: Mutex<HashMap<String, Option<u32>>>,
    groups: Mutex<HashMap<String, Option<u32>>>,
}

impl Default for Owners {
    fn default() -> Self {
        Self::new()
    }
}

impl Owners {
    pub fn new() -> Self {
        Owners {
            is_root: nix::unistd::geteuid().is_root(),
            users: Mutex::default(),
            groups: Mutex::default(),
        }
    }

    pub(super) fn uid(&self, entry: &Entry) -> u32 {
        self.uid_named(entry.user.as_deref(), entry.uid)
    }

    pub(super) fn gid(&self, entry: &Entry) -> u32 {
        self.gid_named(entry.group.as_deref(), entry.gid)
    }

    /// The uid of the user `name` on this host, else `uid`.
    pub fn uid_named(&self, name: Option<&str>, uid: u32) -> u32 {
        let Some(name) = name else {
            return uid;
        };
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let found = users.entry(name.to_owned()).or_insert_with(|| {
            nix::unistd::User::from_name(name)
                .ok()
                .flatten()
                .map(|u| u.uid.as_raw())
        });
        found.unwrap_or(uid)
    }

    /// The gid of the group `name` on this host, else `gid`.
    pub fn gid_named(&self, name: Option<&str>, gid: u32) -> u32 {
        let Some(name) = name else {
            return gid;
        };
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let found = groups.entry(name.to_owned()).or_insert_with(|| {
            nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
        });
        found.unwrap_or(gid)
    }

    /// Whether files can be given away (chown), which only root can do.
    pub fn can_chown(&self) -> bool {
        self.is_root
    }
}

/// Gives `node` the entry's owner, mode, xattrs and mtime.
pub fn set(node: &Node, entry: &Entry, owners: &Owners, fresh: bool) -> io::Result<()> {
    let stat = node.stat();
    let wanted = match entry.kind {
        EntryKind::Dir => libc::S_IFDIR,
        EntryKind::Symlink => libc::S_IFLNK,
        EntryKind::Fifo => libc::S_IFIFO,
        EntryKind::File | EntryKind::Hardlink => libc::S_IFREG,
    };
    if stat.st_mode & libc::S_IFMT != wanted {
        return Err(io::Error::other(
            "changed type during the restore (another writer)",
        ));
    }
    let (uid, gid) = (owners.uid(entry), owners.gid(entry));
    let chown = owners.is_root && (stat.st_uid, stat.st_gid) != (uid, gid);
    if chown {
        match node {
            Node::Open { file, .. } => std::os::unix::fs::fchown(file, Some(uid), Some(gid))?,
            Node::Symlink { path, .. } => std::os::unix::fs::lchown(path, Some(uid), Some(gid))?,
        }
    }
    // After chown, which clears security.capability; before chmod, which may take
    // away our own write access (a restore not run as root). A file made by this
    // restore has no xattrs yet: nothing to list or remove.
    if !(fresh && entry.xattrs.is_empty() && entry.kind != EntryKind::Dir) {
        sync_xattrs(node, &entry.xattrs)?;
    }
    // chown clears setuid bits, so the mode comes after it, and again after any
    // chown even when the mode looked right before. A symlink has no mode.
    if let Node::Open { file, .. } = node
        && (fresh || chown || stat.st_mode & 0o7777 != entry.mode)
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(entry.mode))?;
    }
    let mtime = stat
        .st_mtime
        .saturating_mul(1_000_000_000)
        .saturating_add(stat.st_mtime_nsec);
    if fresh || mtime != entry.mtime {
        let time = TimeSpec::new(
            entry.mtime.div_euclid(1_000_000_000),
            entry.mtime.rem_euclid(1_000_000_000),
        );
        match node {
            Node::Open { file, .. } => futimens(file, &TimeSpec::UTIME_OMIT, &time)?,
            Node::Symlink { path, .. } => utimensat(
                nix::fcntl::AT_FDCWD,
                path,
                &TimeSpec::UTIME_OMIT,
                &time,
                UtimensatFlags::NoFollowSymlink,
            )?,
        }
    }
    Ok(())
}

/// Makes the node's extended attributes exactly the entry's.
fn sync_xattrs(node: &Node, wanted: &[Xattr]) -> io::Result<()> {
    let present: Vec<_> = match list(node) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) && wanted.is_empty() => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in &present {
        if !wanted.iter().any(|x| x.name == name.as_bytes()) {
            match node {
                Node::Open { file, .. } => file.remove_xattr(name)?,
                Node::Symlink { path, .. } => xattr::remove(path, name)?,
            }
        }
    }
    for x in wanted {
        let name = OsStr::from_bytes(&x.name);
        let current = match node {
            Node::Open { file, .. } => file.get_xattr(name),
            Node::Symlink { path, .. } => xattr::get(path, name),
        };
        if current.ok().flatten().as_deref() != Some(&x.value[..]) {
            match node {
                Node::Open { file, .. } => file.set_xattr(name, &x.value)?,
                Node::Symlink { path, .. } => xattr::set(path, name, &x.value)?,
            }
        }
    }
    Ok(())
}

fn list(node: &Node) -> io::Result<Vec<std::ffi::OsString>> {
    Ok(match node {
        Node::Open { file, .. } => file.list_xattr()?.collect(),
        Node::Symlink { path, .. } => xattr::list(path)?.collect(),
    })
}
