//! A hostile tree (crafted, not made by the archiver) cannot make a restore write
//! outside its target.

use envsnap::repo::manifest::{PartLayout, new_backup_id};
use envsnap::repo::tree::{Entry, EntryKind, write_entry};
use tokio_util::sync::CancellationToken;

use crate::support::repo::{HOST, StoreKind, TestRepo, meta};

fn entry(path: &str, kind: EntryKind, target: Option<&[u8]>) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        kind,
        mode: 0o755,
        uid: 0,
        gid: 0,
        user: None,
        group: None,
        mtime: 0,
        ctime: 0,
        inode: 0,
        size: 0,
        xattrs: Vec::new(),
        target: target.map(<[u8]>::to_vec),
        chunks: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_under_a_symlink_of_the_tree_is_refused() {
    let test = TestRepo::new(StoreKind::LocalDir, false).await;
    let outside = test.scratch("outside");
    // `a` is a symlink to a directory outside the target, then `a/evil` a file in it.
    let mut stream = Vec::new();
    for e in [
        entry("", EntryKind::Dir, None),
        entry(
            "a",
            EntryKind::Symlink,
            Some(outside.as_os_str().as_encoded_bytes()),
        ),
        entry("a/evil", EntryKind::File, None),
    ] {
        write_entry(&mut stream, &e).unwrap();
    }
    let mut writer = test
        .repo
        .start_backup(CancellationToken::new())
        .await
        .unwrap();
    writer
        .add_stream("files:data", "", std::io::Cursor::new(stream))
        .await
        .unwrap();
    let mut manifest = writer.commit(meta("live", "crafted")).await.unwrap();
    // Present the stream as a tree part, as a hostile store could.
    manifest.parts[0].layout = PartLayout::Tree;
    manifest.id = new_backup_id(manifest.created);
    test.root
        .scoped(HOST)
        .put(&manifest.key(), manifest.encode(&test.keys).into())
        .await
        .unwrap();
    let crafted = test.repo.load_manifest("live", &manifest.id).await.unwrap();

    let target = test.dir.path().join("target");
    let error = test
        .repo
        .restore_tree(&crafted, "files:data", &target)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("is not inside a directory of the tree"),
        "{error}"
    );
    assert!(
        !outside.join("evil").exists(),
        "nothing was written through the symlink"
    );
}
