//! Tree parts round-trip: the tricky tree, delta restores, incremental backups, and
//! the tar export as GNU tar and bsdtar unpack it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use crate::support::repo::{
    StoreKind, TestRepo, allocated, assert_same_tree, backup_dir, observe, pseudo_random,
};

const SPARSE_SIZE: u64 = 64 << 20;

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn set_mtime(path: &Path, seconds: i64, nanos: i64) {
    let time = TimeSpec::new(seconds, nanos);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &time,
        &time,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Every kind of entry the engine must keep faithfully.
fn make_tricky_tree(root: &Path) {
    std::fs::create_dir_all(root.join("dir/nested/deeper")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("small.txt"), b"hello\n").unwrap();
    std::fs::write(root.join("empty-file"), b"").unwrap();
    std::fs::write(root.join("dir/large.bin"), pseudo_random(700_000, 1)).unwrap();
    std::fs::write(root.join("dir/nested/zeros"), vec![0u8; 200_000]).unwrap();
    std::os::unix::fs::symlink("small.txt", root.join("link-to-file")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink("dir/nested", root.join("link-to-dir")).unwrap();
    std::fs::hard_link(root.join("dir/large.bin"), root.join("hard-1")).unwrap();
    std::fs::hard_link(root.join("dir/large.bin"), root.join("dir/nested/hard-2")).unwrap();
    // Sparse: 64 MiB apparent, two small islands of data.
    let sparse = std::fs::File::create(root.join("sparse.img")).unwrap();
    sparse.set_len(SPARSE_SIZE).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(b"island one", 5 << 20).unwrap();
    sparse
        .write_all_at(&pseudo_random(100_000, 2), 40 << 20)
        .unwrap();
    drop(sparse);
    let odd_name = OsStr::from_bytes(b"not-utf8-\xff\xfe.txt");
    std::fs::write(root.join(odd_name), b"odd name").unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    xattr::set(
        root.join("small.txt"),
        "user.comment",
        b"kept with the file",
    )
    .unwrap();
    xattr::set(root.join("dir"), "user.dir-note", b"\x00binary\xff").unwrap();
    set_mode(&root.join("small.txt"), 0o640);
    set_mode(&root.join("dir/nested/zeros"), 0o4755);
    set_mode(&root.join("empty"), 0o1777);
    if is_root() {
        std::os::unix::fs::lchown(root.join("small.txt"), Some(12345), Some(23456)).unwrap();
        std::os::unix::fs::lchown(root.join("dangling"), Some(4242), Some(4343)).unwrap();
        set_mode(&root.join("dir/nested/zeros"), 0o4755); // chown cleared setuid
    }
    for (i, path) in [
        "small.txt",
        "dir/large.bin",
        "empty",
        "dir/nested",
        "dir",
        "sparse.img",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&root.join(path), 1_600_000_000 + i as i64, 123_456_789);
    }
}

async fn tricky_round_trip(kind: StoreKind, encrypted: bool) {
    let test = TestRepo::new(kind, encrypted).await;
    let source = test.scratch("source");
    make_tricky_tree(&source);
    let manifest = backup_dir(&test.repo, "live", "first", &source, None).await;
    let part = manifest.part("files:data").unwrap();
    // The sparse file's data extents are whole 4 KiB blocks: 4096 + 102400 bytes.
    assert_eq!(
        part.size,
        700_000 + 200_000 + 6 + 8 + 4096 + 102_400,
        "holes and hard links are not data"
    );

    let target = test.dir.path().join("restored");
    let plan = test
        .repo
        .restore_tree(&manifest, "files:data", &target)
        .await
        .unwrap();
    assert_eq!(plan.files_to_keep, 0);
    assert_same_tree(&source, &target);
    let restored_sparse = target.join("sparse.img");
    assert_eq!(
        std::fs::metadata(&restored_sparse).unwrap().len(),
        SPARSE_SIZE
    );
    assert!(
        allocated(&restored_sparse) < 2 << 20,
        "sparse file restored with {} bytes allocated",
        allocated(&restored_sparse)
    );
    let hard = std::fs::metadata(target.join("hard-1")).unwrap();
    assert_eq!(hard.nlink(), 3);
    assert_eq!(
        hard.ino(),
        std::fs::metadata(target.join("dir/nested/hard-2"))
            .unwrap()
            .ino()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tricky_tree_round_trips_on_a_local_directory() {
    tricky_round_trip(StoreKind::LocalDir, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tricky_tree_round_trips_encrypted_in_memory() {
    tricky_round_trip(StoreKind::Memory, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_restore_rewrites_only_what_differs_and_removes_extras() {
    let test = TestRepo::new(StoreKind::LocalDir, false).await;
    let source = test.scratch("source");
    make_tricky_tree(&source);
    for i in 0..20 {
        std::fs::write(
            source.join(format!("file-{i:02}")),
            pseudo_random(30_000, 100 + i),
        )
        .unwrap();
    }
    let manifest = backup_dir(&test.repo, "live", "first", &source, None).await;

    // The live tree drifts: a changed file, a new file, a deleted file, a file that
    // became a directory, a directory that became a file, a retargeted symlink.
    let live = test.dir.path().join("live");
    test.repo
        .restore_tree(&manifest, "files:data", &live)
        .await
        .unwrap();
    let untouched_inode = std::fs::metadata(live.join("file-07")).unwrap().ino();
    std::fs::write(live.join("file-03"), b"changed").unwrap();
    std::fs::write(live.join("extra.txt"), b"not in the backup").unwrap();
    std::fs::create_dir_all(live.join("newdir/sub")).unwrap();
    std::fs::remove_file(live.join("file-05")).unwrap();
    std::fs::remove_file(live.join("file-06")).unwrap();
    std::fs::create_dir(live.join("file-06")).unwrap();
    std::fs::write(live.join("file-06/inside"), b"x").unwrap();
    std::fs::remove_dir_all(live.join("empty")).unwrap();
    std::fs::write(live.join("empty"), b"now a file").unwrap();
    std::fs::remove_file(live.join("link-to-file")).unwrap();
    std::os::unix::fs::symlink("elsewhere", live.join("link-to-file")).unwrap();

    let dry = test
        .repo
        .plan_tree_restore(&manifest, "files:data", &live)
        .await
        .unwrap();
    assert!(live.join("extra.txt").exists(), "planning changes nothing");
    let plan = test
        .repo
        .restore_tree(&manifest, "files:data", &live)
        .await
        .unwrap();
    assert_eq!(dry, plan);
    assert_eq!(
        plan.files_to_write, 3,
        "file-03, file-05 and file-06: {plan:?}"
    );
    assert!(plan.files_to_keep >= 20, "{plan:?}");
    assert!(plan.paths_to_remove >= 4, "{plan:?}");
    assert!(plan.bytes_to_write <= 3 * 30_000, "{plan:?}");
    assert_same_tree(&source, &live);
    assert_eq!(
        std::fs::metadata(live.join("file-07")).unwrap().ino(),
        untouched_inode,
        "identical file left alone"
    );
}

/// Into an existing empty directory the restore builds the tree in its private
/// stage and moves each top-level entry in: the result is the backup, the root gets
/// the backup's mode and mtime, and no stage is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_into_an_empty_directory_moves_the_finished_tree_in() {
    let test = TestRepo::new(StoreKind::LocalDir, false).await;
    let source = test.scratch("source");
    make_tricky_tree(&source);
    set_mode(&source, 0o750);
    let manifest = backup_dir(&test.repo, "live", "first", &source, None).await;

    let target = test.scratch("target");
    set_mode(&target, 0o700);
    let plan = test
        .repo
        .restore_tree(&manifest, "files:data", &target)
        .await
        .unwrap();
    assert_eq!(
        (plan.files_to_keep, plan.paths_to_remove),
        (0, 0),
        "{plan:?}"
    );
    assert_same_tree(&source, &target);
    let mtime = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.mtime(), m.mtime_nsec())
    };
    assert_eq!(
        mtime(&target),
        mtime(&source),
        "the root's mtime is set after the stage is gone"
    );
    let root_mode = std::fs::metadata(&target).unwrap().permissions().mode();
    assert_eq!(root_mode & 0o7777, 0o750);
    let hard = std::fs::metadata(target.join("hard-1")).unwrap();
    assert_eq!(
        hard.nlink(),
        3,
        "hard links made inside the stage move with it"
    );

    // A second restore finds the tree in place and keeps every file.
    let again = test
        .repo
        .restore_tree(&manifest, "files:data", &target)
        .await
        .unwrap();
    assert_eq!(again.files_to_write, 0, "{again:?}");
    assert_same_tree(&source, &target);
}

/// A tree of more entries than one batch of the streamed restore: directories
/// whose subtrees span batches get their own mode and mtime, a hard link finds its
/// file written batches earlier, and the plan counts every entry once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_larger_than_a_batch_restores_whole() {
    let test = TestRepo::new(StoreKind::LocalDir, false).await;
    let source = test.scratch("source");
    for d in 0..3 {
        let dir = source.join(format!("d{d}/deep/deeper"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..3000 {
            std::fs::write(dir.join(format!("f{f:04}")), format!("{d}-{f}")).unwrap();
        }
    }
    std::fs::hard_link(
        source.join("d0/deep/deeper/f0000"),
        source.join("d2/deep/deeper/zz-link"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../d0", source.join("a-link")).unwrap();
    // The tree ends deep inside d2: directories still open at its end.
    for (i, dir) in [
        "d0/deep/deeper",
        "d0/deep",
        "d0",
        "d1/deep",
        "d2",
        "d2/deep",
        "d2/deep/deeper",
    ]
    .iter()
    .enumerate()
    {
        set_mode(&source.join(dir), 0o751 - i as u32);
        set_mtime(&source.join(dir), 1_500_000_000 + i as i64, 7);
    }
    let manifest = backup_dir(&test.repo, "live", "first", &source, None).await;
    let target = test.dir.path().join("restored");
    let plan = test
        .repo
        .restore_tree(&manifest, "files:data", &target)
        .await
        .unwrap();
    // The root, 9 directories, 9,000 files, a hard link and a symlink.
    assert_eq!(plan.entries, 1 + 9 + 9000 + 2, "{plan:?}");
    assert_eq!(plan.files_to_write, 9000, "{plan:?}");
    assert_same_tree(&source, &target);
    let link = std::fs::metadata(target.join("d2/deep/deeper/zz-link")).unwrap();
    assert_eq!(link.nlink(), 2);
}

/// A kept file whose owner is corrected keeps its setuid bit: chown clears it, so
/// the mode is set again even though it looked right before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_setuid_file_whose_owner_is_corrected_stays_setuid() {
    if !is_root() {
        return; // chown needs root
    }
    let test = TestRepo::new(StoreKind::LocalDir, false).await;
    let source = test.scratch("source");
    std::fs::write(source.join("tool"), b"#!/bin/sh\n").unwrap();
    set_mode(&source.join("tool"), 0o4755);
    let manifest = backup_dir(&test.repo, "live", "first", &source, None).await;
    let live = test.dir.path().join("live");
    test.repo
        .restore_tree(&manifest, "files:data", &live)
        .await
        .unwrap();
    // Another owner, the same mode (set again after the chown cleared it).
    std::os::unix::fs::chown(live.join("tool"), Some(4242), Some(4242)).unwrap();
    set_mode(&live.join("tool"), 0o4755);
    let plan = test
        .repo
        .restore_tree(&manifest, "files:data", &live)
        .await
        .unwrap();
    assert_eq!(plan.files_to_keep, 1, "{plan:?}");
    let meta = std::fs::metadata(live.join("tool")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    assert_eq!(meta.permissions().mode() & 0o7777, 0o4755);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_backup_reuses_unchanged_files() {
    let test = TestRepo::new(StoreKind::Memory, false).await;
    let source = test.scratch("source");
    for i in 0..30 {
        std::fs::write(source.join(format!("f{i}")), pseudo_random(50_000, i)).unwrap();
    }
    let first = backup_dir(&test.repo, "live", "first", &source, None).await;
    assert!(
        first.parts[0].stored > 30 * 40_000,
        "compressing random data gains nothing"
    );
    let unchanged = backup_dir(&test.repo, "live", "second", &source, Some(&first)).await;
    assert_eq!(
        unchanged.parts[0].stored, 0,
        "nothing new when nothing changed"
    );
    std::fs::write(source.join("f3"), pseudo_random(50_000, 999)).unwrap();
    let third = backup_dir(&test.repo, "live", "third", &source, Some(&unchanged)).await;
    let stored = third.parts[0].stored;
    assert!(
        stored > 40_000 && stored < 2 * 50_000 + 20_000,
        "one changed file's worth: {stored}"
    );
    let target = test.dir.path().join("out");
    test.repo
        .restore_tree(&third, "files:data", &target)
        .await
        .unwrap();
    assert_same_tree(&source, &target);
}

fn export_and_extract(
    test: &TestRepo,
    manifest: &envsnap::repo::manifest::Manifest,
    tool: &str,
    args: &[&str],
) -> std::path::PathBuf {
    let out = test.scratch(&format!("extract-{tool}"));
    let archive = test.dir.path().join(format!("export-{tool}.tar"));
    let file = std::fs::File::create(&archive).unwrap();
    let handle = tokio::runtime::Handle::current();
    let repo = test.repo.clone();
    let manifest = manifest.clone();
    tokio::task::block_in_place(|| {
        handle
            .block_on(repo.export_tar(&manifest, "files:data", file))
            .unwrap()
    });
    let status = Command::new(tool)
        .args(args)
        .arg("-f")
        .arg(&archive)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "{tool} failed to extract the export");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tar_export_extracts_faithfully_with_gnu_tar_and_bsdtar() {
    let test = TestRepo::new(StoreKind::LocalDir, false).await;
    let source = test.scratch("source");
    make_tricky_tree(&source);
    let manifest = backup_dir(&test.repo, "live", "first", &source, None).await;
    let mut tools = vec![(
        "tar",
        vec![
            "-x",
            "--xattrs",
            "--xattrs-include=*",
            "-p",
            "--same-owner",
            "--numeric-owner",
        ],
    )];
    if Command::new("bsdtar").arg("--version").output().is_ok() {
        tools.push(("bsdtar", vec!["-x", "--xattrs", "-p", "--numeric-owner"]));
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs bsdtar (libarchive-tools)"
        );
    }
    for (tool, args) in tools {
        let out = export_and_extract(&test, &manifest, tool, &args);
        let (want, got) = (observe(&source), observe(&out));
        assert_eq!(
            want.keys().collect::<Vec<_>>(),
            got.keys().collect::<Vec<_>>(),
            "{tool}: paths"
        );
        for (path, w) in &want {
            if path.as_os_str().is_empty() {
                continue; // the root is the extraction directory
            }
            assert_eq!(w, &got[path], "{tool}: entry {path:?}");
        }
    }
}
