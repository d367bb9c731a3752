//! Targets for imports: tar archives (plain, gzip or zstd) unpacked as `import`
//! does, and dumps checked as `import` checks them.
//!
//! An archive comes from anyone with the restore right, or from a URL. The tar target
//! unpacks into a staging directory and then checks what the import promises: nothing
//! outside the staging directory, no symlink that leads out of it, no device node, no
//! setuid or setgid bit. As root it runs chrooted into its scratch directory (a
//! thread of its own: `unshare(CLONE_FS)`), so a bug cannot write anywhere else.

use std::cell::RefCell;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use envsnap::config::DatabaseKind;
use envsnap::import;
use tokio::io::AsyncReadExt;

use super::alloc;
use super::driver::{DEFAULT_ALLOCATION, DEFAULT_TIME_LIMIT, Outcome, Target, coarse};

pub static TAR: Target = Target {
    name: "tar_import",
    run: tar_import,
    dictionary: &[
        b"ustar\x0000",
        b"ustar  \x00",
        b"././@LongLink",
        b"PaxHeader",
        b"30 mtime=1700000000.123456789\n",
        b"20 path=../../etc\n",
        b"24 linkpath=/etc/passwd\n",
        b"27 SCHILY.xattr.user.a=b\n",
        b"../",
        b"/",
        b"0000644\x00",
        b"0004755\x00",
        b"00000000000\x00",
        b"77777777777\x00",
        b"\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01",
        b"\x1f\x8b\x08\x00",
        b"\x28\xb5\x2f\xfd",
    ],
    max_len: 64 << 10,
    allocation: DEFAULT_ALLOCATION,
    time_limit: Duration::from_secs(30),
};

/// A decompressed archive is cut here: a small compressed input may expand without
/// limit, and only the unpacking is under test.
const MAX_UNPACKED: u64 = 64 << 20;

/// A multi-threaded runtime (as the daemon's) whose threads all see the scratch
/// directory as `base`: `/` when chrooted.
struct Place {
    runtime: tokio::runtime::Runtime,
    base: PathBuf,
}

thread_local! {
    static PLACE: RefCell<Option<Place>> = const { RefCell::new(None) };
}

fn with_place<T>(f: impl FnOnce(&Place) -> T) -> T {
    PLACE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let place = slot.get_or_insert_with(|| {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
                "fuzz-tar-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            // Threads started from here on share this thread's confined file-system
            // context (CLONE_FS): the runtime's are.
            let base = confine(&dir);
            let guard = alloc::current();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .on_thread_start(move || {
                    if let Some(guard) = guard {
                        guard.watch_this_thread();
                    }
                })
                .build()
                .unwrap();
            Place { runtime, base }
        });
        f(place)
    })
}

/// Gives the calling thread a file-system context of its own and, as root, makes
/// `dir` its root directory. Returns where `dir` is for the thread.
fn confine(dir: &Path) -> PathBuf {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).expect("unshare(CLONE_FS)");
    if !nix::unistd::geteuid().is_root() {
        return dir.to_path_buf();
    }
    nix::unistd::chroot(dir).expect("chroot");
    std::env::set_current_dir("/").unwrap();
    PathBuf::from("/")
}

/// `import::from_file` and `import::unpack_tar` (root's import, setuid bits
/// dropped), then the checks above, whether the import succeeded or not.
fn tar_import(input: &[u8]) -> Outcome {
    with_place(|place| {
        let case = place.base.join("case");
        let _ = std::fs::remove_dir_all(&case);
        std::fs::create_dir(&case).unwrap();
        let root = case.join("staging");
        std::fs::create_dir(&root).unwrap();
        let file = case.join("archive");
        std::fs::write(&file, input).unwrap();
        let result = place.runtime.block_on(async {
            let archive = std::fs::File::open(&file).unwrap();
            std::fs::remove_file(&file).unwrap();
            let stream = import::from_file(archive)
                .await
                .map_err(|e| e.to_string())?;
            let capped: import::Input = Box::pin(stream.take(MAX_UNPACKED));
            let options = import::UnpackOptions {
                owner: None,
                keep_setuid: false,
                max_size: MAX_UNPACKED,
            };
            import::unpack_tar(capped, root.clone(), options).await
        });
        let found = check_staging(&case, &root);
        if let Ok(count) = &result {
            assert!(
                *count <= input.len() as u64 / 512 + (MAX_UNPACKED / 512),
                "more entries than blocks"
            );
        }
        let _ = std::fs::remove_dir_all(&case);
        result
            .map(|count| format!("{} entries, {found}", count.min(3)))
            .map_err(|e| coarse(&e))
    })
}

/// Checks what the staging directory holds; says what kinds of things it holds.
fn check_staging(case: &Path, root: &Path) -> String {
    let outside: Vec<_> = std::fs::read_dir(case)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != "staging")
        .collect();
    assert!(
        outside.is_empty(),
        "written outside the staging directory: {outside:?}"
    );
    let mut kinds = std::collections::BTreeSet::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let path = root.join(&relative);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let kind = meta.file_type();
        assert!(
            !(kind.is_block_device() || kind.is_char_device() || kind.is_socket()),
            "{relative:?} is a device node or socket"
        );
        if !kind.is_symlink() {
            assert_eq!(
                meta.permissions().mode() & 0o6000,
                0,
                "{relative:?} is setuid or setgid"
            );
        }
        if kind.is_dir() {
            kinds.insert("dir");
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(relative.join(entry.unwrap().file_name()));
            }
        } else if kind.is_symlink() {
            kinds.insert("symlink");
            let target = std::fs::read_link(&path).unwrap();
            assert!(
                stays_inside(&relative, &target),
                "symlink {relative:?} leads out to {target:?}"
            );
        } else if kind.is_fifo() {
            kinds.insert("fifo");
        } else {
            kinds.insert("file");
        }
    }
    kinds.into_iter().collect::<Vec<_>>().join(" ")
}

/// Whether a symlink at `link` (relative to the staging directory) to `target`
/// resolves inside it, lexically.
fn stays_inside(link: &Path, target: &Path) -> bool {
    let mut depth = link.components().count() as i64 - 1;
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => depth -= 1,
            Component::RootDir | Component::Prefix(_) => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

pub static DUMP: Target = Target {
    name: "dump_check",
    run: dump_check,
    dictionary: &[
        b"PGDMP",
        b"SQLite format 3\x00",
        b"REDIS0011",
        b"-- Dump completed",
        b"\xff",
        b"\x00\x00\x00\x00",
        b"\x10\x00",
        b"\x00\x01",
        b"CREATE ",
        b"-- ",
    ],
    max_len: 64 << 10,
    allocation: DEFAULT_ALLOCATION,
    time_limit: DEFAULT_TIME_LIMIT,
};

/// `import::checked_dump`: the first byte picks the database kind, the rest is the
/// dump, read to its end (where a dump that is not whole fails).
fn dump_check(input: &[u8]) -> Outcome {
    let Some((&selector, dump)) = input.split_first() else {
        return Err("empty".into());
    };
    let kind = [
        DatabaseKind::Postgres,
        DatabaseKind::Mariadb,
        DatabaseKind::Sqlite,
        DatabaseKind::Redis,
    ][usize::from(selector % 4)];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let input: import::Input = Box::pin(std::io::Cursor::new(dump.to_vec()));
        let mut checked = import::checked_dump(input, kind, MAX_UNPACKED).await?;
        let mut out = Vec::new();
        checked
            .read_to_end(&mut out)
            .await
            .map_err(|e| format!("{kind:?}: {e}"))?;
        assert_eq!(out, dump, "a whole dump passes unchanged");
        Ok(format!("{kind:?} whole"))
    })
}
