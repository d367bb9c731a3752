//! Corruption: damaged or missing packs in a local-directory store.
//!
//! A flipped byte in a pack must be found by `verify` with `read_data` (and not by the
//! structure check, which reads no data), and refused by restore, which names the part
//! and the object and leaves the target exactly as it was. A missing pack is found by
//! the structure check and named by restore. A stream part read from a damaged pack
//! fails rather than yield wrong bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use envsnap::repo::crypto::Keys;
use envsnap::repo::manifest::Manifest;
use envsnap::repo::pack::{ChunkKind, parse_pack};
use tokio_util::sync::CancellationToken;

use crate::support::repo::*;

/// Every pack file of the test repository, with its key as the engine names it.
fn pack_files(t: &TestRepo) -> Vec<(String, PathBuf)> {
    let base = t.dir.path().join("store").join(HOST);
    let mut found = Vec::new();
    for prefix in std::fs::read_dir(base.join("packs")).unwrap() {
        for pack in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
            let path = pack.unwrap().path();
            let key = path
                .strip_prefix(&base)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            found.push((key, path));
        }
    }
    found.sort();
    assert!(!found.is_empty(), "the backup wrote no pack");
    found
}

/// Flips every bit of the byte in the middle of `path`.
fn flip_middle_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// Flips the middle byte of the largest chunk of `kind` in the pack at `path`, so the
/// damage lands in file content (found while fetching) or in the tree (while planning).
fn flip_byte_in_chunk(path: &Path, keys: &Keys, kind: ChunkKind) {
    let mut bytes = std::fs::read(path).unwrap();
    let entries = parse_pack(keys, &bytes).unwrap();
    let chunk = entries
        .iter()
        .filter(|e| e.kind == kind)
        .max_by_key(|e| e.length)
        .unwrap_or_else(|| panic!("the pack holds no {kind:?} chunk"));
    let at = (chunk.offset + u64::from(chunk.length) / 2) as usize;
    bytes[at] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// A small tree: fits one pack, so any damaged pack hurts every file.
fn make_source(root: &Path, seed: u64) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.bin"), pseudo_random(200_000, seed)).unwrap();
    std::fs::write(root.join("sub/b.bin"), pseudo_random(150_000, seed + 1)).unwrap();
    std::fs::write(root.join("sub/c.txt"), b"small text\n".repeat(100)).unwrap();
}

/// A previous state of the same paths, every file of another size and content.
fn make_previous_state(root: &Path) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.bin"), pseudo_random(1_000, 99)).unwrap();
    std::fs::write(root.join("sub/b.bin"), pseudo_random(2_000, 98)).unwrap();
    std::fs::write(root.join("sub/c.txt"), b"old\n").unwrap();
    std::fs::write(root.join("extra.txt"), b"not in the backup\n").unwrap();
}

/// Restore must fail naming the part and `object`, and change nothing in `target`.
async fn assert_restore_refused(t: &TestRepo, manifest: &Manifest, target: &Path, object: &str) {
    let before = observe(target);
    let error = t
        .repo
        .restore_tree(manifest, "files:data", target)
        .await
        .expect_err("restoring from a damaged store must fail");
    let message = error.to_string();
    assert!(
        message.contains("files:data"),
        "the error names the part: {message}"
    );
    assert!(
        message.contains(object),
        "the error names {object}: {message}"
    );
    assert_unchanged(&before, &observe(target));
}

/// Compares two observations of a target; the root's own mtime may move (the restore
/// stages inside the target), everything else must not.
fn assert_unchanged(before: &BTreeMap<PathBuf, Observed>, after: &BTreeMap<PathBuf, Observed>) {
    let paths = |m: &BTreeMap<PathBuf, Observed>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(paths(before), paths(after), "the target's paths changed");
    for (path, was) in before {
        let now = &after[path];
        if path.as_os_str().is_empty() {
            assert_eq!(
                (was.kind, was.mode),
                (now.kind, now.mode),
                "target root changed"
            );
        } else {
            assert_eq!(was, now, "{path:?} changed");
        }
    }
}

async fn flipped_byte(encrypted: bool, kind: ChunkKind) {
    let t = TestRepo::new(StoreKind::LocalDir, encrypted).await;
    let source = t.scratch("source");
    make_source(&source, 1);
    let manifest = backup_dir(&t.repo, "prod", "b1", &source, None).await;
    let packs = pack_files(&t);
    assert_eq!(packs.len(), 1, "the fixture fits one pack");
    let (key, path) = &packs[0];
    flip_byte_in_chunk(path, &t.keys, kind);

    let manifests = t.repo.list_manifests(None).await.unwrap();
    let structure = t.repo.verify(&manifests, false).await.unwrap();
    if kind == ChunkKind::Data {
        assert!(
            structure.is_ok(),
            "the structure check reads no file data: {:?}",
            structure.problems
        );
    } else {
        // The structure check reads trees to find the files' chunks.
        assert!(
            structure
                .problems
                .iter()
                .any(|p| p.contains(key.as_str()) && p.contains("files:data")),
            "the structure check names the damaged tree's pack {key}: {:?}",
            structure.problems
        );
    }
    let full = t.repo.verify(&manifests, true).await.unwrap();
    assert!(!full.is_ok(), "read_data must find the flipped byte");
    assert!(
        full.problems.iter().all(|p| p.contains(key.as_str())),
        "every problem names {key}: {:?}",
        full.problems
    );

    let empty = t.scratch("empty");
    assert_restore_refused(&t, &manifest, &empty, key).await;
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "the empty target got files"
    );

    let previous = t.scratch("previous");
    make_previous_state(&previous);
    assert_restore_refused(&t, &manifest, &previous, key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_file_data_is_found_by_verify_and_refused_by_restore() {
    flipped_byte(false, ChunkKind::Data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_tree_is_found_by_verify_and_refused_by_restore() {
    flipped_byte(false, ChunkKind::Tree).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_an_encrypted_repository_is_found_and_refused() {
    flipped_byte(true, ChunkKind::Data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_pack_is_named_by_verify_and_restore() {
    let t = TestRepo::new(StoreKind::LocalDir, false).await;
    let source = t.scratch("source");
    make_source(&source, 3);
    let manifest = backup_dir(&t.repo, "prod", "b1", &source, None).await;
    let packs = pack_files(&t);
    let (key, path) = &packs[0];
    std::fs::remove_file(path).unwrap();

    let manifests = t.repo.list_manifests(None).await.unwrap();
    let structure = t.repo.verify(&manifests, false).await.unwrap();
    assert!(
        structure
            .problems
            .iter()
            .any(|p| p.contains(key.as_str()) && p.contains("missing")),
        "the structure check names the missing {key}: {:?}",
        structure.problems
    );

    let empty = t.scratch("empty");
    assert_restore_refused(&t, &manifest, &empty, key).await;
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    let previous = t.scratch("previous");
    make_previous_state(&previous);
    assert_restore_refused(&t, &manifest, &previous, key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_from_a_damaged_pack_fails_naming_the_object() {
    let t = TestRepo::new(StoreKind::LocalDir, false).await;
    let data = pseudo_random(600_000, 7);
    let mut writer = t.repo.start_backup(CancellationToken::new()).await.unwrap();
    writer
        .add_stream("db:main", "raw", std::io::Cursor::new(data.clone()))
        .await
        .unwrap();
    let manifest = writer.commit(meta("prod", "dump")).await.unwrap();

    let mut out = Vec::new();
    t.repo
        .read_stream(&manifest, "db:main", &mut out)
        .await
        .unwrap();
    assert!(out == data, "the intact stream round-trips");

    let packs = pack_files(&t);
    assert_eq!(packs.len(), 1);
    let (key, path) = &packs[0];
    flip_middle_byte(path);
    let mut out = Vec::new();
    let error = t
        .repo
        .read_stream(&manifest, "db:main", &mut out)
        .await
        .expect_err("a damaged chunk must not be streamed out");
    let message = error.to_string();
    assert!(message.contains(key.as_str()), "names {key}: {message}");
    assert!(message.contains("db:main"), "names the part: {message}");
    assert!(out.len() < data.len(), "the stream stopped early");
    assert!(
        data.starts_with(&out),
        "what was written before the failure is the true data"
    );

    let full = t.repo.verify(&[manifest], true).await.unwrap();
    assert!(
        full.problems.iter().any(|p| p.contains(key.as_str())),
        "read_data names {key}: {:?}",
        full.problems
    );
}
