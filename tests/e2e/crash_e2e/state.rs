//! What an environment holds, exactly: a manifest of its trees and its database's
//! content, to compare before and after a crash.
//!
//! The manifest walks `live/app`, `live/uploads` and `live/data` and records, per
//! entry, its type, mode, owner, size, mtime (nanoseconds), a BLAKE3 hash of a
//! file's content and a symlink's target, and which names share an inode. The part
//! roots' own mtimes are left out (a restore changes their entries), and so is the
//! SQLite file's content: a restore writes the database anew, so its rows are
//! compared instead, as `sqlite3 .dump` prints them.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment's directories a restore may change, relative to `DIR/live`.
const ROOTS: [&str; 3] = ["app", "uploads", "data"];
/// Compared by its rows, not its bytes.
const DATABASE: &str = "data/main.db";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime_ns: Option<i64>,
    hash: Option<String>,
    link: Option<PathBuf>,
    /// Other names of the same inode (hard links), when there are any.
    hard_links: Vec<PathBuf>,
}

impl Entry {
    /// The fields in which `got` differs, as `field X (want Y)`.
    fn difference(&self, got: &Entry) -> String {
        let fields = [
            ("type", self.kind.to_owned(), got.kind.to_owned()),
            (
                "mode",
                format!("{:o}", self.mode),
                format!("{:o}", got.mode),
            ),
            (
                "owner",
                format!("{}:{}", self.uid, self.gid),
                format!("{}:{}", got.uid, got.gid),
            ),
            ("size", self.size.to_string(), got.size.to_string()),
            (
                "mtime_ns",
                format!("{:?}", self.mtime_ns),
                format!("{:?}", got.mtime_ns),
            ),
            ("hash", short(&self.hash), short(&got.hash)),
            (
                "link",
                format!("{:?}", self.link),
                format!("{:?}", got.link),
            ),
            (
                "hard links",
                format!("{:?}", self.hard_links),
                format!("{:?}", got.hard_links),
            ),
        ];
        let differing: Vec<String> = fields
            .into_iter()
            .filter(|(_, want, got)| want != got)
            .map(|(field, want, got)| format!("{field} {got} (want {want})"))
            .collect();
        differing.join(", ")
    }
}

fn short(hash: &Option<String>) -> String {
    hash.as_deref()
        .map_or("-".to_owned(), |h| h[..12].to_owned())
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvState {
    entries: BTreeMap<PathBuf, Entry>,
    database: String,
}

impl EnvState {
    /// The state of `DIR/live`.
    pub fn of(dir: &Path) -> Self {
        let live = dir.join("live");
        let mut entries = BTreeMap::new();
        let mut inodes: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
        let mut pending: Vec<PathBuf> = ROOTS.iter().map(PathBuf::from).collect();
        while let Some(rel) = pending.pop() {
            let full = live.join(&rel);
            let meta = std::fs::symlink_metadata(&full).unwrap();
            let entry = observe(&full, &rel, &meta, &mut pending);
            if entry.kind == "file" && meta.nlink() > 1 {
                inodes.entry(meta.ino()).or_default().push(rel.clone());
            }
            entries.insert(rel, entry);
        }
        for names in inodes.values() {
            for name in names {
                let mut others: Vec<PathBuf> =
                    names.iter().filter(|n| *n != name).cloned().collect();
                others.sort();
                entries.get_mut(name).unwrap().hard_links = others;
            }
        }
        EnvState {
            entries,
            database: dump(&live.join(DATABASE)),
        }
    }

    /// How `actual` differs from `self`, at most `limit` differences, one line each.
    pub fn differences(&self, actual: &EnvState, limit: usize) -> Vec<String> {
        let mut found = Vec::new();
        for (path, want) in &self.entries {
            match actual.entries.get(path) {
                None => found.push(format!("{} is missing", path.display())),
                Some(got) if got != want => {
                    found.push(format!("{}: {}", path.display(), want.difference(got)))
                }
                Some(_) => {}
            }
        }
        for path in actual.entries.keys() {
            if !self.entries.contains_key(path) {
                found.push(format!("{} is there too", path.display()));
            }
        }
        if self.database != actual.database {
            found.push(database_difference(&self.database, &actual.database));
        }
        found.truncate(limit);
        found
    }
}

/// One entry; a directory's children are pushed onto `pending`.
fn observe(full: &Path, rel: &Path, meta: &std::fs::Metadata, pending: &mut Vec<PathBuf>) -> Entry {
    let kind = meta.file_type();
    let is_root = rel.components().count() == 1;
    let is_database = rel == Path::new(DATABASE);
    let (kind, hash, link) = if kind.is_dir() {
        for item in std::fs::read_dir(full).unwrap() {
            pending.push(rel.join(item.unwrap().file_name()));
        }
        ("dir", None, None)
    } else if kind.is_symlink() {
        ("symlink", None, Some(std::fs::read_link(full).unwrap()))
    } else if kind.is_file() && !is_database {
        let content = std::fs::read(full).unwrap();
        (
            "file",
            Some(blake3::hash(&content).to_hex().to_string()),
            None,
        )
    } else if kind.is_file() {
        ("file", None, None)
    } else {
        ("other", None, None)
    };
    // Symlink times are not restored everywhere; the roots' and the database's are
    // the restore's own business.
    let timeless = is_root || is_database || kind == "symlink";
    Entry {
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: if kind == "file" && !is_database {
            meta.len()
        } else {
            0
        },
        mtime_ns: (!timeless).then(|| meta.mtime() * 1_000_000_000 + meta.mtime_nsec()),
        hash,
        link,
        hard_links: Vec::new(),
    }
}

/// The database's schema and rows as SQL.
fn dump(db: &Path) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(".dump")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sqlite3 {}: {}",
        db.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn database_difference(want: &str, got: &str) -> String {
    let (want_lines, got_lines): (Vec<&str>, Vec<&str>) =
        (want.lines().collect(), got.lines().collect());
    let first = want_lines
        .iter()
        .zip(&got_lines)
        .position(|(a, b)| a != b)
        .unwrap_or(want_lines.len().min(got_lines.len()));
    let clip =
        |line: Option<&&str>| line.map_or("(end)".to_owned(), |l| l.chars().take(80).collect());
    format!(
        "the database differs ({} lines, not {}) from line {}: {:?}, not {:?}",
        got_lines.len(),
        want_lines.len(),
        first + 1,
        clip(got_lines.get(first)),
        clip(want_lines.get(first)),
    )
}
