//! Property tests: random streams and random trees come back byte for byte, on the
//! in-memory and local-directory stores, with and without encryption.

use std::collections::BTreeMap;
use std::path::PathBuf;

use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::support::repo::{
    StoreKind, TestRepo, assert_same_tree, backup_dir, meta, pseudo_random,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn configurations() -> [(StoreKind, bool); 4] {
    [
        (StoreKind::Memory, false),
        (StoreKind::Memory, true),
        (StoreKind::LocalDir, false),
        (StoreKind::LocalDir, true),
    ]
}

/// A stream made of repeated and random pieces, so dedup inside it is exercised.
fn stream_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((0u64..4, 0usize..120_000), 0..6).prop_map(|pieces| {
        pieces
            .into_iter()
            .flat_map(|(seed, len)| pseudo_random(len, seed))
            .collect()
    })
}

/// Files at random paths (up to three levels) with random content and modes.
fn tree_strategy() -> impl Strategy<Value = BTreeMap<PathBuf, (Vec<u8>, u32)>> {
    let name = prop::sample::select(vec!["a", "b", "c", "long-name-ä", "x.y"]);
    let path =
        prop::collection::vec(name, 1..4).prop_map(|parts| parts.iter().collect::<PathBuf>());
    let content = (0u64..6, 0usize..90_000).prop_map(|(seed, len)| pseudo_random(len, seed));
    let mode = prop::sample::select(vec![0o644u32, 0o600, 0o755, 0o444]);
    prop::collection::btree_map(path, (content, mode), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn streams_round_trip(data in stream_strategy()) {
        runtime().block_on(async {
            for (kind, encrypted) in configurations() {
                let test = TestRepo::new(kind, encrypted).await;
                let mut writer = test.repo.start_backup(CancellationToken::new()).await.unwrap();
                writer.add_stream("database:main", "sqlite", std::io::Cursor::new(data.clone())).await.unwrap();
                let manifest = writer.commit(meta("live", "s1")).await.unwrap();
                assert_eq!(manifest.parts[0].size, data.len() as u64);
                let mut out = Vec::new();
                test.reopen().await.read_stream(&manifest, "database:main", &mut out).await.unwrap();
                assert!(out == data, "stream differs ({kind:?}, encrypted {encrypted})");
            }
        });
    }

    #[test]
    fn trees_round_trip(files in tree_strategy()) {
        runtime().block_on(async {
            for (kind, encrypted) in configurations() {
                let test = TestRepo::new(kind, encrypted).await;
                let source = test.scratch("source");
                for (path, (content, mode)) in &files {
                    let full = source.join(path);
                    // A path may be both a file and a directory's prefix: the first wins.
                    if full.ancestors().skip(1).any(|a| a.is_file()) || full.is_dir() {
                        continue;
                    }
                    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                    std::fs::write(&full, content).unwrap();
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&full, std::fs::Permissions::from_mode(*mode)).unwrap();
                }
                let manifest = backup_dir(&test.repo, "live", "t1", &source, None).await;
                let target = test.dir.path().join("restored");
                test.reopen().await.restore_tree(&manifest, "files:data", &target).await.unwrap();
                assert_same_tree(&source, &target);
            }
        });
    }
}
