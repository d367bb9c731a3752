//! The environment a trial crashes: a daemon on the standard config whose `live`
//! environment has app hooks that leave markers, tens of MB of seeded data (code,
//! media files, a SQLite database), and a first backup `base`.
//!
//! Everything is drawn from the trial's [`Rng`], so a seed makes the same files.
//! The hooks write outside the environment (`DIR/hooks.log`, `DIR/app.state`), so
//! they never show up in the environment's snapshots.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::state::EnvState;
use crate::support::daemon::{TestDaemon, make_environments, standard_config};

/// Code files made at first; churn adds and removes a few.
const CODE_FILES: usize = 120;
/// Media files in the uploads mount, 2-6 MB each.
const MEDIA_FILES: usize = 6;
/// Rows of the database's `items` table.
const ROWS: usize = 3000;

/// splitmix64: small, seedable, and good enough to pick sizes, files and delays.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Incompressible bytes (BLAKE3's output stream, fast even in a debug build).
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&self.next().to_le_bytes())
            .finalize_xof()
            .fill(&mut out);
        out
    }

    pub fn hex(&mut self, len: usize) -> String {
        hex::encode(self.bytes(len / 2))
    }
}

/// A running daemon with `live` populated and backed up as `base`.
pub struct Lab {
    pub daemon: TestDaemon,
    pub rng: Rng,
    /// A completed backup the next operation works on, and the environment it holds.
    pub base: String,
    pub base_state: EnvState,
    names: u32,
}

impl Lab {
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let dir = tempfile::tempdir().unwrap();
        populate(dir.path(), &mut rng);
        let extra = hooks(dir.path());
        let daemon = TestDaemon::start_in(dir, |d| standard_config(d, &extra));
        let mut lab = Lab {
            daemon,
            rng,
            base: String::new(),
            base_state: EnvState::default(),
            names: 0,
        };
        lab.base = lab.backup("base");
        lab.base_state = lab.state();
        lab
    }

    pub fn dir(&self) -> &Path {
        self.daemon.dir.path()
    }

    pub fn state(&self) -> EnvState {
        EnvState::of(self.dir())
    }

    /// A fresh backup name starting with `stem`.
    pub fn name(&mut self, stem: &str) -> String {
        self.names += 1;
        format!("{stem}-{}", self.names)
    }

    /// Backs up `live` now (waiting for it); returns the backup's name.
    pub fn backup(&mut self, stem: &str) -> String {
        let name = match stem {
            "base" => stem.to_owned(),
            _ => self.name(stem),
        };
        let done = self
            .daemon
            .json(&["backup", "create", "live", "--name", &name, "--wait"]);
        assert_eq!(done["job"]["state"], "succeeded", "{done}");
        name
    }

    /// Changes every part of `live`: media files rewritten (each with a chance of
    /// `rewrite_percent`), removed and added, code files changed, removed, added and
    /// chmodded, database rows changed.
    pub fn churn(&mut self, rewrite_percent: u64) {
        let dir = self.dir().to_path_buf();
        let media = dir.join("live/uploads/media");
        churn_media(&media, rewrite_percent, &mut self.rng);
        churn_code(&dir.join("live/app"), &mut self.rng);
        churn_rows(&dir.join("live/data/main.db"), &mut self.rng);
    }

    /// A tar archive of a code tree made elsewhere (~20 MB), for `import`.
    pub fn code_archive(&mut self) -> PathBuf {
        let name = format!("{}.tar", self.name("code"));
        let path = self.dir().join(name);
        let mut entries = vec![("index.php".to_owned(), b"<?php echo 1;\n".to_vec(), 0o644)];
        for i in 0..40 {
            let size = self.rng.between(100, 8000) as usize;
            entries.push((
                format!("src/m{}/f{i}.php", i % 5),
                self.rng.bytes(size),
                0o644,
            ));
        }
        for i in 0..4 {
            let size = self.rng.between(4 << 20, 6 << 20) as usize;
            entries.push((format!("assets/blob{i}.bin"), self.rng.bytes(size), 0o600));
        }
        let mut builder = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for (name, data, mode) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(mode);
            header.set_uid(nix::unistd::getuid().as_raw().into());
            header.set_gid(nix::unistd::getgid().as_raw().into());
            header.set_mtime(1_790_000_000 + self.rng.below(1_000_000));
            header.set_cksum();
            builder.append_data(&mut header, name, &data[..]).unwrap();
        }
        builder.into_inner().unwrap().sync_all().unwrap();
        path
    }
}

/// `app.stop`, `start` and `check` append their name to `hooks.log`; stop and start
/// write `stopped`/`running` to `app.state`, and check fails unless it is `running`.
fn hooks(dir: &Path) -> String {
    let (log, state) = (dir.join("hooks.log"), dir.join("app.state"));
    let step = |name: &str, then: String| {
        format!("sh -c 'echo {name} >> {log}; {then}'", log = log.display())
    };
    format!(
        "[environments.live.app]\nstop = [\"{}\"]\nstart = [\"{}\"]\ncheck = [\"{}\"]\n",
        step("stop", format!("echo stopped > {}", state.display())),
        step("start", format!("echo running > {}", state.display())),
        step("check", format!("grep -qx running {}", state.display())),
    )
}

/// The standard environments, then seeded code, media and rows on top.
fn populate(dir: &Path, rng: &mut Rng) {
    make_environments(dir);
    std::fs::write(dir.join("app.state"), "running\n").unwrap();
    let app = dir.join("live/app");
    for i in 0..CODE_FILES {
        write_code_file(&app.join(format!("src/m{}/f{i}.php", i % 8)), rng);
    }
    std::os::unix::fs::symlink("src", app.join("current")).unwrap();
    std::fs::hard_link(app.join("src/lib.php"), app.join("lib-link.php")).unwrap();
    let media = dir.join("live/uploads/media");
    std::fs::create_dir_all(&media).unwrap();
    for i in 0..MEDIA_FILES {
        write_media_file(&media.join(format!("f{i}.bin")), rng);
    }
    let mut sql = String::from(
        "CREATE TABLE items(id INTEGER PRIMARY KEY, payload TEXT NOT NULL);\nBEGIN;\n",
    );
    for _ in 0..ROWS {
        let size = rng.between(100, 500) as usize;
        sql += &format!("INSERT INTO items(payload) VALUES ('{}');\n", rng.hex(size));
    }
    sql += "COMMIT;\n";
    sqlite(&dir.join("live/data/main.db"), &sql);
}

fn write_code_file(path: &Path, rng: &mut Rng) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let size = rng.between(200, 12_000) as usize;
    std::fs::write(path, rng.bytes(size)).unwrap();
    let mode = [0o644, 0o644, 0o755, 0o600][rng.below(4) as usize];
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn write_media_file(path: &Path, rng: &mut Rng) {
    let size = rng.between(2 << 20, 6 << 20) as usize;
    std::fs::write(path, rng.bytes(size)).unwrap();
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

fn churn_media(media: &Path, rewrite_percent: u64, rng: &mut Rng) {
    for file in files_under(media) {
        if rng.chance(10) {
            std::fs::remove_file(&file).unwrap();
        } else if rng.chance(rewrite_percent) {
            write_media_file(&file, rng);
        }
    }
    let new = 1 + rng.below(2);
    for _ in 0..new {
        write_media_file(&media.join(format!("n{}.bin", rng.hex(8))), rng);
    }
}

fn churn_code(app: &Path, rng: &mut Rng) {
    for file in files_under(&app.join("src")) {
        match rng.below(100) {
            0..3 => std::fs::remove_file(&file).unwrap(),
            3..18 => write_code_file(&file, rng),
            18..20 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap()
            }
            _ => {}
        }
    }
    let dir = format!("src/new{}", rng.hex(6));
    for i in 0..4 {
        write_code_file(&app.join(format!("{dir}/f{i}.php")), rng);
    }
}

fn churn_rows(db: &Path, rng: &mut Rng) {
    let mut sql = String::from("BEGIN;\n");
    for _ in 0..300 {
        let (id, size) = (1 + rng.below(ROWS as u64), rng.between(100, 500) as usize);
        sql += &format!(
            "UPDATE items SET payload = '{}' WHERE id = {id};\n",
            rng.hex(size)
        );
    }
    for _ in 0..50 {
        sql += &format!(
            "DELETE FROM items WHERE id = {};\n",
            1 + rng.below(ROWS as u64)
        );
    }
    for _ in 0..100 {
        let size = rng.between(100, 500) as usize;
        sql += &format!("INSERT INTO items(payload) VALUES ('{}');\n", rng.hex(size));
    }
    sql += "COMMIT;\n";
    sqlite(db, &sql);
}

/// Runs `sql` on `db` with the sqlite3 shell (fed on stdin: the script is large).
fn sqlite(db: &Path, sql: &str) {
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sqlite3 is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
