//! The walk through a tree part in tree order, entry by entry: it checks what a
//! restore must be able to trust (strict tree order, so no duplicates; a root first;
//! every entry inside a directory entry of the tree, so nothing is written through a
//! symlink the tree itself makes, e.g. `a -> /etc` then `a/passwd`) and tracks the
//! directories whose subtrees are still open. In tree order a directory's subtree is
//! contiguous, so a stack of open directories is all it needs: memory follows the
//! depth, not the number of entries. The planned restore (`plan.rs`) checks a whole
//! tree with it; the streamed one (`streamed.rs`) also sets each directory's
//! metadata once the walk has closed it.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::repo::RepoError;
use crate::repo::tree::{self, Entry, EntryKind};

/// The walk through the tree as it streams by: checks order and nesting, and holds
/// the directories whose subtrees are still being read.
pub(super) struct Walk {
    part: String,
    previous: Option<Vec<u8>>,
    root: Option<Entry>,
    /// Directories from the top down to the current entry.
    open: Vec<Entry>,
    /// Directories below the top level whose subtrees are complete, deepest first.
    pub(super) closed: Vec<Entry>,
    /// Top-level directories: given their metadata once moved into the target.
    pub(super) top: HashMap<Vec<u8>, Entry>,
}

impl Walk {
    pub(super) fn new(part: &str) -> Walk {
        Walk {
            part: part.to_owned(),
            previous: None,
            root: None,
            open: Vec::new(),
            closed: Vec::new(),
            top: HashMap::new(),
        }
    }

    fn corrupt(&self, reason: String) -> RepoError {
        RepoError::Corrupt {
            object: format!("tree of {}", self.part),
            reason,
        }
    }

    /// Takes the next entry of the tree.
    pub(super) fn step(&mut self, entry: &Entry) -> Result<(), RepoError> {
        let shown = || String::from_utf8_lossy(&entry.path).into_owned();
        match &self.previous {
            None if !(entry.path.is_empty() && entry.kind == EntryKind::Dir) => {
                return Err(self.corrupt("does not start with its root".into()));
            }
            Some(previous) if tree::path_order(previous, &entry.path) != Ordering::Less => {
                return Err(self.corrupt(format!("entries out of order at {:?}", shown())));
            }
            _ => {}
        }
        self.previous = Some(entry.path.clone());
        if entry.path.is_empty() {
            self.root = Some(entry.clone());
            return Ok(());
        }
        let parent = match entry.path.iter().rposition(|b| *b == b'/') {
            Some(slash) => &entry.path[..slash],
            None => &[][..],
        };
        // In tree order a directory's subtree is contiguous: a directory that is not
        // this entry's parent is done.
        while self.open.last().is_some_and(|dir| dir.path != parent) {
            let done = self.open.pop().expect("checked above");
            self.close(done);
        }
        if !parent.is_empty() && self.open.is_empty() {
            return Err(self.corrupt(format!(
                "entry {:?} is not inside a directory of the tree",
                shown()
            )));
        }
        if entry.kind == EntryKind::Dir {
            self.open.push(entry.clone());
        }
        Ok(())
    }

    fn close(&mut self, dir: Entry) {
        match dir.path.contains(&b'/') {
            true => self.closed.push(dir),
            false => {
                self.top.insert(dir.path.clone(), dir);
            }
        }
    }

    /// The end of the tree: every directory still open is done.
    pub(super) fn end(&mut self) -> Result<Entry, RepoError> {
        while let Some(done) = self.open.pop() {
            self.close(done);
        }
        self.root
            .take()
            .ok_or_else(|| self.corrupt("does not start with its root".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind) -> Entry {
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
            target: None,
            chunks: Vec::new(),
        }
    }

    fn walk(paths: &[(&str, EntryKind)]) -> Result<Walk, String> {
        let mut walk = Walk::new("files:data");
        for (path, kind) in paths {
            walk.step(&entry(path, *kind)).map_err(|e| e.to_string())?;
        }
        Ok(walk)
    }

    /// Directories close deepest first once the walk leaves their subtree; the top
    /// level waits for the move.
    #[test]
    fn directories_close_when_their_subtree_ends() {
        use EntryKind::{Dir, File};
        let mut w = walk(&[
            ("", Dir),
            ("a", Dir),
            ("a/b", Dir),
            ("a/b/c", Dir),
            ("a/b/c/f", File),
            ("a/b/g", File),
            ("a/x", Dir),
            ("z", File),
        ])
        .unwrap();
        let closed: Vec<_> = w.closed.iter().map(|d| d.path.clone()).collect();
        assert_eq!(
            closed,
            vec![b"a/b/c".to_vec(), b"a/b".to_vec(), b"a/x".to_vec()]
        );
        assert!(w.top.contains_key(&b"a"[..]));
        assert_eq!(w.end().unwrap().path, b"");
    }

    #[test]
    fn a_tree_out_of_order_or_outside_its_directories_is_refused() {
        use EntryKind::{Dir, File, Symlink};
        let cases = [
            (vec![("a", File)], "does not start with its root"),
            (
                vec![("", Dir), ("b", File), ("a", File)],
                "entries out of order at \"a\"",
            ),
            (
                vec![("", Dir), ("a", Symlink), ("a/evil", File)],
                "entry \"a/evil\" is not inside a directory of the tree",
            ),
            (
                vec![("", Dir), ("x/y", File)],
                "entry \"x/y\" is not inside a directory of the tree",
            ),
        ];
        for (paths, reason) in cases {
            let err = walk(&paths).err().expect("refused");
            assert!(err.ends_with(reason), "{err}");
        }
        assert!(
            Walk::new("files:data").end().is_err(),
            "an empty tree has no root"
        );
    }
}
