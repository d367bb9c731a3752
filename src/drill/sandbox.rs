//! A drill's sandbox: `<state_dir>/drills/<job id>`, root's, mode 0700, on the same
//! filesystem as the restore staging, one directory per part inside.
//!
//! Before anything is restored the drill checks that the filesystem has room for the
//! backup ([`room_needed`]). Afterwards the sandbox is removed, or kept (with
//! `--keep`, or `keep_sandbox_on_failure` after a failure) by renaming it to
//! `kept-<job id>`, which start-up leaves alone. At start-up [`sweep`] kills any
//! scratch server a crashed drill left and removes every other sandbox.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::repo::manifest::{Manifest, PartLayout};

const DRILLS: &str = "drills";
const KEPT_PREFIX: &str = "kept-";

/// A loaded database takes more room than its dump (indexes, WAL, free space).
const DATABASE_GROWTH: u64 = 3;
/// Room kept free besides: the filesystem must not fill up under the daemon.
const MARGIN: u64 = 256 << 20;

/// Why a sandbox cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot prepare the drill's sandbox {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "not enough room for the drill in {}: it needs about {} MiB, {} MiB are free",
        path.display(),
        needed >> 20,
        free >> 20
    )]
    NoRoom {
        path: PathBuf,
        needed: u64,
        free: u64,
    },
    #[error("the backup names a part {0:?}, which is not a part name")]
    BadPart(String),
}

pub struct Sandbox {
    root: PathBuf,
}

fn drills_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(DRILLS)
}

fn private_dir(path: &Path) -> Result<(), SandboxError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| SandboxError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Bytes a drill of `manifest` needs: its trees, and its databases grown.
pub fn room_needed(manifest: &Manifest) -> u64 {
    manifest
        .main_parts()
        .map(|p| match p.layout {
            PartLayout::Tree => p.size,
            PartLayout::Stream => p.size.saturating_mul(DATABASE_GROWTH),
        })
        .sum::<u64>()
        .saturating_add(MARGIN)
}

impl Sandbox {
    /// Creates the sandbox of drill `job` (a leftover of the same id is removed).
    pub fn create(state_dir: &Path, job: i64) -> Result<Sandbox, SandboxError> {
        let drills = drills_dir(state_dir);
        private_dir(&drills)?;
        let root = drills.join(job.to_string());
        if root.exists() {
            let _ = std::fs::remove_dir_all(&root);
        }
        private_dir(&root)?;
        Ok(Sandbox { root })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A new private directory for `part` (`files:uploads` → `files-uploads`). The
    /// name comes from the backup's manifest (hostile input): only `code`,
    /// `files:NAME` and `database:NAME` with a safe `NAME` make a directory.
    pub fn part_dir(&self, part: &str) -> Result<PathBuf, SandboxError> {
        let safe = match part.split_once(':') {
            None => part == "code",
            Some(("files" | "database", name)) => crate::repo::manifest::is_safe_name(name),
            Some(_) => false,
        };
        if !safe {
            return Err(SandboxError::BadPart(crate::message::one_line(part)));
        }
        let dir = self.root.join(part.replace(':', "-"));
        private_dir(&dir)?;
        Ok(dir)
    }

    /// Removes the sandbox and everything in it. A scratch server killed a moment
    /// ago (a drill cancelled or past its time) may still be exiting and writing:
    /// the removal is tried again for a while.
    pub async fn remove(self) {
        let root = self.root;
        let removed = tokio::task::spawn_blocking(move || {
            let mut attempt = 0;
            loop {
                match std::fs::remove_dir_all(&root) {
                    Err(e) if attempt < 50 && e.kind() != std::io::ErrorKind::NotFound => {
                        attempt += 1;
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err((root, e)),
                    _ => return Ok(()),
                }
            }
        })
        .await;
        if let Ok(Err((root, e))) = removed {
            tracing::warn!(sandbox = %root.display(), error = %e, "cannot remove the drill's sandbox");
        }
    }

    /// Keeps the sandbox for the operator: renamed so start-up leaves it alone.
    /// Returns where it is now.
    pub fn keep(self) -> PathBuf {
        let name = self
            .root
            .file_name()
            .map(|n| format!("{KEPT_PREFIX}{}", n.to_string_lossy()))
            .unwrap_or_default();
        let kept = self.root.with_file_name(name);
        let _ = std::fs::remove_dir_all(&kept);
        match std::fs::rename(&self.root, &kept) {
            Ok(()) => kept,
            Err(_) => self.root,
        }
    }
}

/// Refuses when the filesystem of `dir` has less than `needed` bytes free (also
/// asked before a drill is queued, of the state directory).
pub fn check_room(dir: &Path, needed: u64) -> Result<(), SandboxError> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(|e| SandboxError::Io {
        path: dir.to_path_buf(),
        source: e.into(),
    })?;
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    if free < needed {
        return Err(SandboxError::NoRoom {
            path: dir.to_path_buf(),
            needed,
            free,
        });
    }
    Ok(())
}

/// At start-up: kills the scratch servers crashed drills left (and, for a drill
/// user of its own, every process of that user) and removes their sandboxes (kept
/// ones stay). Returns how many sandboxes were removed.
pub fn sweep(state_dir: &Path, drill_user: &str) -> usize {
    let leftovers = crate::sources::scratch::kill_leftovers_of(drill_user);
    if leftovers > 0 {
        tracing::warn!(
            user = drill_user,
            killed = leftovers,
            "killed processes left by interrupted drills"
        );
    }
    let Ok(items) = std::fs::read_dir(drills_dir(state_dir)) else {
        return 0;
    };
    let mut removed = 0;
    for item in items.flatten() {
        if item.file_name().to_string_lossy().starts_with(KEPT_PREFIX) {
            continue;
        }
        let path = item.path();
        let killed = crate::sources::scratch::sweep(&path);
        if killed > 0 {
            tracing::warn!(sandbox = %path.display(), killed, "killed scratch servers of an interrupted drill");
        }
        if std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_sandbox_is_private_kept_on_request_and_swept_otherwise() {
        let state = tempfile::tempdir().unwrap();
        let sandbox = Sandbox::create(state.path(), 7).unwrap();
        let mode = std::fs::metadata(sandbox.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let part = sandbox.part_dir("files:uploads").unwrap();
        assert!(part.ends_with("7/files-uploads"));
        for hostile in ["..", ".", "files:..", "database:a/b", "code/x", "x:y"] {
            assert!(sandbox.part_dir(hostile).is_err(), "{hostile}");
        }
        let kept = sandbox.keep();
        assert!(kept.ends_with("drills/kept-7"));
        let crashed = Sandbox::create(state.path(), 8).unwrap();
        std::fs::write(crashed.path().join("leftover"), b"x").unwrap();
        assert_eq!(sweep(state.path(), "nobody"), 1);
        assert!(kept.exists(), "a kept sandbox survives a restart");
        assert!(!state.path().join("drills/8").exists());
        let sandbox = Sandbox::create(state.path(), 9).unwrap();
        let refused = check_room(sandbox.path(), u64::MAX)
            .unwrap_err()
            .to_string();
        assert!(
            refused.starts_with("not enough room for the drill in "),
            "{refused}"
        );
    }
}
