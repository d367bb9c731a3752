//! Restoring a backup's parts: the file trees one after another and, beside them, the
//! databases one after another.
//!
//! A tree's restore is many small writes bound by the disk and the kernel; a
//! database's is one file written or a server loading a dump. Side by side, a restore
//! takes about as long as its longer lane instead of the sum of its parts (in the
//! churn scenario of `docs/engine.md` the SQLite part was 1.6-1.9 s of an 11 s
//! restore, with one core idle). Two trees never run together (they share the disk,
//! and memory would double), nor two databases (two PostgreSQL restores on one
//! server would both create the roles it lacks).
//!
//! A database whose file (SQLite's `path`, Redis's `rdb_path`) lies inside a tree
//! part's directory waits until that tree is restored: the tree's restore may create
//! the directory, and into a new or empty directory it streams without staging each
//! file, so the two must never race in one directory. Writing the database's file
//! then makes its directory's mtime now: the time the tree gave it is put back.
//! Trees are restored in the order of the part names, databases too.
//!
//! When a part fails, no other part starts; a part already running is finished (a
//! restore abandoned halfway would leave its staging behind) and the first failure
//! is returned, for the job to roll back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::error::RestoreError;
use crate::config::{DatabaseConfig, EnvConfig, PartSource};
use crate::context::Context;
use crate::repo::Repository;
use crate::repo::manifest::Manifest;
use crate::sources;

/// One mapped part: the backup's part `from` onto the environment's part `to`.
struct Mapped<'a, T> {
    from: &'a str,
    to: &'a str,
    target: T,
}

struct TreeTarget<'a> {
    path: &'a Path,
    exclude: &'a [String],
}

struct DatabaseTarget<'a> {
    db: &'a DatabaseConfig,
    /// How many of the trees (in their order) must be restored before this one.
    after_trees: usize,
}

/// Restores each mapped part (backup part → environment part) from `manifest`.
pub(super) async fn restore_parts(
    ctx: &Context,
    source: &Repository,
    manifest: &Manifest,
    parts: &BTreeMap<String, String>,
    env: &EnvConfig,
) -> Result<(), RestoreError> {
    let targets = env.parts();
    let (trees, databases) = lanes(parts, &targets, env)?;
    let restored_trees = watch::Sender::new(0usize);
    let stop = CancellationToken::new();
    let tree_lane = async {
        for (done, tree) in trees.iter().enumerate() {
            if stop.is_cancelled() {
                break;
            }
            if let Err(e) = restore_tree(source, manifest, tree).await {
                stop.cancel();
                return Err(e);
            }
            restored_trees.send_replace(done + 1);
        }
        Ok(())
    };
    let database_lane = async {
        let mut restored = restored_trees.subscribe();
        for database in &databases {
            let needed = database.target.after_trees;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = restored.wait_for(|&done| done >= needed) => {}
            }
            if stop.is_cancelled() {
                break;
            }
            if let Err(e) = restore_database(ctx, source, manifest, database).await {
                stop.cancel();
                return Err(e);
            }
        }
        Ok(())
    };
    let (trees_done, databases_done) = tokio::join!(tree_lane, database_lane);
    trees_done.and(databases_done)
}

type Lanes<'a> = (
    Vec<Mapped<'a, TreeTarget<'a>>>,
    Vec<Mapped<'a, DatabaseTarget<'a>>>,
);

/// The mapped parts split into the tree lane and the database lane, each database
/// with the trees it waits for.
fn lanes<'a>(
    parts: &'a BTreeMap<String, String>,
    targets: &'a [crate::config::PartSpec],
    env: &EnvConfig,
) -> Result<Lanes<'a>, RestoreError> {
    let (mut trees, mut databases) = (Vec::new(), Vec::new());
    for (from, to) in parts {
        let target =
            targets
                .iter()
                .find(|p| &p.name == to)
                .ok_or_else(|| RestoreError::NoSuchPart {
                    env: env.name.clone(),
                    part: to.clone(),
                })?;
        match &target.source {
            PartSource::Tree { path, exclude } => trees.push(Mapped {
                from,
                to,
                target: TreeTarget { path, exclude },
            }),
            PartSource::Database(db) => databases.push(Mapped {
                from,
                to,
                target: DatabaseTarget { db, after_trees: 0 },
            }),
        }
    }
    let tree_dirs: Vec<PathBuf> = trees.iter().map(|t| resolved(t.target.path)).collect();
    for database in &mut databases {
        if let Some(file) = database_file(database.target.db) {
            database.target.after_trees = trees_to_wait_for(&resolved(file), &tree_dirs);
        }
    }
    Ok((trees, databases))
}

/// The file a database's restore writes on this host, if it writes one.
fn database_file(db: &DatabaseConfig) -> Option<&Path> {
    db.path.as_deref().or(db.rdb_path.as_deref())
}

/// How many trees, in order, must be restored before `file` may be written: up to
/// and including the last whose directory holds it.
fn trees_to_wait_for(file: &Path, tree_dirs: &[PathBuf]) -> usize {
    tree_dirs
        .iter()
        .rposition(|dir| file.starts_with(dir))
        .map_or(0, |last| last + 1)
}

/// `path` with the symlinks of its existing ancestors resolved, so that two spellings
/// of one place compare equal; what does not exist yet is kept as written.
fn resolved(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut existing = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            return missing.iter().rev().fold(real, |dir, name| dir.join(name));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name);
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

async fn restore_tree(
    source: &Repository,
    manifest: &Manifest,
    tree: &Mapped<'_, TreeTarget<'_>>,
) -> Result<(), RestoreError> {
    let started = Instant::now();
    source
        .restore_tree_excluding(manifest, tree.from, tree.target.path, tree.target.exclude)
        .await
        .map_err(|source| RestoreError::Tree {
            part: tree.to.to_owned(),
            source,
        })?;
    tracing::debug!(part = tree.to, elapsed = ?started.elapsed(), "part restored");
    Ok(())
}

async fn restore_database(
    ctx: &Context,
    source: &Repository,
    manifest: &Manifest,
    database: &Mapped<'_, DatabaseTarget<'_>>,
) -> Result<(), RestoreError> {
    let config = ctx.config();
    let scratch = config.daemon.state_dir.join("tmp");
    let timeout = config.daemon.command_timeout;
    let started = Instant::now();
    let (from, to) = (database.from, database.to);
    // The directory a tree restored, whose time the file's rename will change.
    let restored_dir = database_file(database.target.db)
        .filter(|_| database.target.after_trees > 0)
        .and_then(Path::parent);
    let tree_time = restored_dir.and_then(mtime_of);
    sources::restore_database(
        source,
        manifest,
        from,
        to,
        database.target.db,
        &scratch,
        timeout,
    )
    .await
    .map_err(|source| RestoreError::Database {
        part: to.to_owned(),
        source,
    })?;
    if let (Some(dir), Some(time)) = (restored_dir, tree_time) {
        set_mtime(dir, &time);
    }
    tracing::debug!(part = to, elapsed = ?started.elapsed(), "part restored");
    Ok(())
}

/// The mtime of the directory `dir` (not followed if a link).
fn mtime_of(dir: &Path) -> Option<TimeSpec> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir).ok().filter(|m| m.is_dir())?;
    Some(TimeSpec::new(meta.mtime(), meta.mtime_nsec()))
}

/// Sets `dir`'s mtime, never through a link in its place: at worst (a link planted
/// meanwhile by a user who can write its parent) a link's time changes.
fn set_mtime(dir: &Path, time: &TimeSpec) {
    let set = utimensat(
        nix::fcntl::AT_FDCWD,
        dir,
        &TimeSpec::UTIME_OMIT,
        time,
        UtimensatFlags::NoFollowSymlink,
    );
    if let Err(e) = set {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot put back the directory's time");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_waits_for_the_last_tree_that_holds_its_file() {
        let dirs = [
            PathBuf::from("/srv/app/files"),
            PathBuf::from("/srv/app"),
            PathBuf::from("/srv/app/db"),
            PathBuf::from("/srv/other"),
        ];
        assert_eq!(
            trees_to_wait_for(Path::new("/srv/app/db/app.sqlite"), &dirs),
            3
        );
        assert_eq!(
            trees_to_wait_for(Path::new("/srv/app/top.sqlite"), &dirs),
            2
        );
        // Components, not text: /srv/application is not inside /srv/app.
        assert_eq!(
            trees_to_wait_for(Path::new("/srv/application/x.db"), &dirs),
            0
        );
        assert_eq!(
            trees_to_wait_for(Path::new("/var/lib/redis/dump.rdb"), &dirs),
            0
        );
    }

    #[test]
    fn resolved_follows_existing_symlinks_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let real = std::fs::canonicalize(&real).unwrap();
        assert_eq!(
            resolved(&dir.path().join("link/db/app.sqlite")),
            real.join("db/app.sqlite")
        );
        assert_eq!(resolved(&dir.path().join("real")), real);
    }
}
