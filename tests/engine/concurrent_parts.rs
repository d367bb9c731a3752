//! Parts written side by side through `PartWriter` handles (the backup job writes
//! two at a time): each restores byte for byte, the manifest lists them in the
//! reserved order, and a part that fails stops the others and leaves nothing behind.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use envsnap::repo::RepoError;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::support::repo::*;

/// Incompressible bytes, `fail_after` of them and then an error, or without end.
struct Source {
    position: usize,
    fail_after: Option<usize>,
}

impl AsyncRead for Source {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.fail_after.is_some_and(|after| self.position >= after) {
            return Poll::Ready(Err(std::io::Error::other("the dump tool crashed")));
        }
        let data = pseudo_random(buf.remaining().min(64 * 1024), self.position as u64 + 1);
        buf.put_slice(&data);
        self.position += data.len();
        Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_written_side_by_side_restore_and_keep_their_order() {
    let t = TestRepo::new(StoreKind::LocalDir, false).await;
    let source = t.scratch("tree");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    std::fs::write(source.join("sub/big.bin"), pseudo_random(3 << 20, 5)).unwrap();
    std::fs::write(source.join("small.txt"), b"small").unwrap();
    let stream = pseudo_random(5 << 20, 6);

    let writer = t.repo.start_backup(CancellationToken::new()).await.unwrap();
    let parts = writer.part_writer().unwrap();
    parts.reserve(["files:data", "database:main"]);
    let (tree, dump) = tokio::join!(
        parts.add_tree("files:data", source.clone(), Default::default()),
        parts.add_paged_stream(
            "database:main",
            "sqlite",
            std::io::Cursor::new(stream.clone()),
            4096
        ),
    );
    assert_eq!(tree.unwrap().entries, 4);
    assert_eq!(dump.unwrap().size, stream.len() as u64);
    drop(parts);
    let manifest = writer.commit(meta("prod", "both")).await.unwrap();

    let names: Vec<&str> = manifest.parts.iter().map(|p| p.part.as_str()).collect();
    assert_eq!(names, ["files:data", "database:main"]);
    assert!(manifest.parts.iter().all(|p| p.stored > 0), "{manifest:?}");
    let mut out = Vec::new();
    t.repo
        .read_stream(&manifest, "database:main", &mut out)
        .await
        .unwrap();
    assert!(out == stream, "the stream part differs");
    let target = t.scratch("restored");
    t.repo
        .restore_tree(&manifest, "files:data", &target)
        .await
        .unwrap();
    assert_same_tree(&source, &target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_part_stops_the_others_and_the_write_leaves_nothing() {
    let t = TestRepo::new(StoreKind::LocalDir, false).await;
    let mut writer = t.repo.start_backup(CancellationToken::new()).await.unwrap();
    let parts = writer.part_writer().unwrap();
    let endless = Source {
        position: 0,
        fail_after: None,
    };
    let failing = Source {
        position: 0,
        fail_after: Some(40 << 20),
    };
    // As the backup job does: the first error ends the wait for the others.
    let failed = futures::future::try_join(
        parts.add_stream("database:endless", "raw", endless),
        parts.add_stream("database:broken", "raw", failing),
    )
    .await
    .unwrap_err();
    drop(parts);
    // The endless part must stop, or draining the pipeline never ends.
    let explained = tokio::time::timeout(Duration::from_secs(120), writer.explain(failed))
        .await
        .expect("the other part did not stop");
    assert!(
        matches!(&explained, RepoError::InPart { part, .. } if part == "database:broken"),
        "{explained:?}"
    );
    assert!(
        explained.to_string().contains("the dump tool crashed"),
        "{explained}"
    );
    writer.abort().await;
    let packs = t.root.scoped(HOST).list("packs").await.unwrap();
    assert!(packs.is_empty(), "an aborted write left {packs:?}");
}
