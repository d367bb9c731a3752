//! Paged streams (SQLite parts): cut at page boundaries and listed (`manifest.rs`).
//!
//! A backup after a few pages changed must store those pages and the list, nothing
//! more; every backup must read back byte for byte, also after prune removed the
//! backup whose pages it shares, and after the index is rebuilt from the store.

use envsnap::catalog::Catalog;
use envsnap::repo::Repository;
use envsnap::repo::manifest::Manifest;
use tokio_util::sync::CancellationToken;

use crate::support::repo::*;

const PAGE: usize = 4096;
const PART: &str = "database:app";

async fn paged_backup(repo: &Repository, name: &str, data: &[u8]) -> Manifest {
    let writer = repo.start_backup(CancellationToken::new()).await.unwrap();
    let cursor = std::io::Cursor::new(data.to_vec());
    (writer.part_writer().unwrap())
        .add_paged_stream(PART, "sqlite", cursor, PAGE)
        .await
        .unwrap();
    writer.commit(meta("prod", name)).await.unwrap()
}

async fn read_back(repo: &Repository, manifest: &Manifest) -> Vec<u8> {
    let mut out = Vec::new();
    let written = repo.read_stream(manifest, PART, &mut out).await.unwrap();
    assert_eq!(written, out.len() as u64);
    out
}

/// 64 incompressible pages and a partial one (stored sizes are about raw sizes).
fn database() -> Vec<u8> {
    pseudo_random(64 * PAGE + 100, 11)
}

fn change_pages(data: &mut [u8], pages: &[usize]) {
    for page in pages {
        for byte in &mut data[page * PAGE..page * PAGE + 16] {
            *byte ^= 0x5a;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_stream_stores_only_changed_pages_and_reads_back_whole() {
    let t = TestRepo::new(StoreKind::LocalDir, true).await;
    let first_data = database();
    let first = paged_backup(&t.repo, "day1", &first_data).await;
    let record = first.part(PART).unwrap();
    assert!(record.listed, "a paged stream is listed");
    assert_eq!(first.format, 2, "listed parts need manifest format 2");
    assert_eq!(record.size, first_data.len() as u64);
    assert!(
        record.stored >= first_data.len() as u64,
        "{} stored",
        record.stored
    );
    assert_eq!(read_back(&t.repo, &first).await, first_data);

    let mut second_data = first_data.clone();
    change_pages(&mut second_data, &[0, 17, 64]);
    let second = paged_backup(&t.repo, "day2", &second_data).await;
    // Three pages (the last one partial) and the list of 65 ids (2,080 bytes), each
    // with its few bytes of framing: nothing else is new.
    let stored = second.part(PART).unwrap().stored;
    let least = (2 * PAGE + 100 + 65 * 32) as u64;
    assert!(
        (least..least + 1024).contains(&stored),
        "the second backup stored {stored} bytes for 3 changed pages and the list"
    );
    assert_eq!(read_back(&t.repo, &second).await, second_data);
    assert_eq!(read_back(&t.repo, &first).await, first_data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_keeps_the_pages_a_listed_part_names() {
    let t = TestRepo::new(StoreKind::LocalDir, false).await;
    let first = paged_backup(&t.repo, "day1", &database()).await;
    let mut second_data = database();
    change_pages(&mut second_data, &[3]);
    let second = paged_backup(&t.repo, "day2", &second_data).await;

    // Deleting a backup owes a sweep, so this prune marks: the pages the second
    // backup shares with the first are reached only through its list.
    let report = t.repo.prune(std::slice::from_ref(&first)).await.unwrap();
    assert!(report.marked, "{report:?}");
    assert_eq!(read_back(&t.repo, &second).await, second_data);
    let manifests = t.repo.list_manifests(None).await.unwrap();
    let verified = t.repo.verify(&manifests, true).await.unwrap();
    assert!(verified.is_ok(), "verify: {:?}", verified.problems);
    assert!(
        verified.chunks_referenced >= 66,
        "65 pages and the list: {verified:?}"
    );

    // A catalog rebuilt from the store finds the list and the pages again.
    let rebuilt = Repository::open(&t.root, HOST, t.keys.clone(), Catalog::in_memory().unwrap())
        .await
        .unwrap();
    rebuilt.rebuild_index().await.unwrap();
    assert_eq!(read_back(&rebuilt, &second).await, second_data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_without_listed_parts_keeps_format_1() {
    let t = TestRepo::new(StoreKind::Memory, false).await;
    let mut writer = t.repo.start_backup(CancellationToken::new()).await.unwrap();
    let data = pseudo_random(10_000, 12);
    writer
        .add_stream(PART, "sqlite", std::io::Cursor::new(data.clone()))
        .await
        .unwrap();
    let manifest = writer.commit(meta("prod", "plain")).await.unwrap();
    assert_eq!(manifest.format, 1, "older envsnap still reads it");
    assert!(!manifest.part(PART).unwrap().listed);
    assert_eq!(read_back(&t.repo, &manifest).await, data);
}
