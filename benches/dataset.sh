# shellcheck shell=bash
# The benchmarks' data set and its daily churn, sourced by compare.sh, objstore.sh,
# history.sh and lock.sh (see benches/README.md, "The data"): real files copied from
# this machine (many small ones, a few large shared libraries, symlinks), three hard
# links, a sparse file and a real SQLite database, built once under $DATASET and
# reused by later runs.
#
# The sourcing script sets DATASET, BENCH_GIB, BENCH_SQLITE_MB, BENCH_SPARSE_GIB and
# BENCH_REBUILD, and defines log(); python3 must be installed.

# build_dataset: builds $DATASET afresh (tree/ and app.db).
build_dataset() {
  log "building dataset in $DATASET (${BENCH_GIB} GiB of files, ${BENCH_SQLITE_MB} MB SQLite)"
  rm -rf "$DATASET.tmp"
  mkdir -p "$DATASET.tmp/tree"
  local sysroot=""
  command -v rustc >/dev/null && sysroot=$(rustc --print sysroot)
  python3 - "$DATASET.tmp/tree" "$BENCH_GIB" "$sysroot" <<'PY'
import os, shutil, stat, sys

dest, gib, sysroot = sys.argv[1], float(sys.argv[2]), sys.argv[3]
target = int(gib * 2**30)
total = 0

def copy_file(src, rel):
    """Copy one regular file or symlink (metadata like cp -a); skip the rest."""
    global total
    try:
        st = os.lstat(src)
    except OSError:
        return
    out = os.path.join(dest, rel)
    if stat.S_ISLNK(st.st_mode):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        try:
            os.symlink(os.readlink(src), out)
        except OSError:
            pass
        return
    if not stat.S_ISREG(st.st_mode) or total + st.st_size > target or os.path.lexists(out):
        return
    os.makedirs(os.path.dirname(out), exist_ok=True)
    try:
        shutil.copy2(src, out, follow_symlinks=False)
    except OSError:  # unreadable: leave it out
        try: os.unlink(out)
        except OSError: pass
        return
    total += st.st_size

def copy_tree(root, name, budget):
    """Walk root in sorted order, copying until this source's budget is used."""
    limit = min(target, total + budget)
    for d, dirs, files in os.walk(root, onerror=lambda e: None):
        dirs.sort()
        for f in sorted(files):
            if total >= limit:
                return
            src = os.path.join(d, f)
            rel = os.path.join(name, os.path.relpath(src, root))
            # per-source limit: a file that does not fit is skipped
            try:
                if os.lstat(src).st_size > limit - total:
                    continue
            except OSError:
                continue
            copy_file(src, rel)
        # keep empty directories too: they are part of a real tree
        os.makedirs(os.path.join(dest, name, os.path.relpath(d, root)), exist_ok=True)

# A few large files first (at most 4, within 25% of the target).
large = []
for root in ["/usr/lib/x86_64-linux-gnu", "/usr/lib/jvm", os.path.join(sysroot, "lib") if sysroot else ""]:
    if not root or not os.path.isdir(root):
        continue
    for d, _, files in os.walk(root, onerror=lambda e: None):
        for f in files:
            p = os.path.join(d, f)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size >= 20 * 2**20 and os.access(p, os.R_OK):
                large.append((st.st_size, p))
large.sort(reverse=True)
budget, picked = target // 4, 0
for size, p in large:
    if picked < 4 and size <= budget:
        copy_file(p, os.path.join("large", p.lstrip("/")))
        budget -= size
        picked += 1

# Then many small and medium files, each source with a share of the rest.
sources = [
    ("/usr/share/doc", "share-doc", 0.10),
    (os.path.join(sysroot, "share/doc") if sysroot else "", "rust-doc", 0.35),
    ("/usr/share", "share", 0.20),
    ("/usr/lib", "lib", 1.0),
]
rest = target - total
for root, name, share in sources:
    if root and os.path.isdir(root) and total < target:
        copy_tree(root, name, int(rest * share))
print(f"copied {total} bytes", file=sys.stderr)
PY
  local tree=$DATASET.tmp/tree
  # Hard links: kept as links by a faithful backup.
  mkdir -p "$tree/hardlinks"
  head -c 100000 /dev/urandom >"$tree/hardlinks/a"
  ln "$tree/hardlinks/a" "$tree/hardlinks/b"
  ln "$tree/hardlinks/a" "$tree/hardlinks/c"
  # Sparse file: 1 GiB apparent size, a few MiB of real data at spread offsets.
  truncate -s "$(python3 -c "print(int($BENCH_SPARSE_GIB * 2**30))")" "$tree/sparse.img"
  local off
  for off in 0 100 300 600 1000; do   # MiB offsets (within 1 GiB by default)
    dd if=/dev/urandom of="$tree/sparse.img" bs=1M count=1 seek="$off" conv=notrunc status=none
  done
  # SQLite database with random-ish rows (text, numbers, partly compressible blobs).
  python3 - "$DATASET.tmp/app.db" "$BENCH_SQLITE_MB" <<'PY'
import os, random, sqlite3, sys
path, mb = sys.argv[1], float(sys.argv[2])
rnd = random.Random(42)
db = sqlite3.connect(path)
db.executescript("""
  PRAGMA journal_mode = DELETE;
  CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT, email TEXT, balance REAL);
  CREATE TABLE events(id INTEGER PRIMARY KEY, customer INTEGER, kind TEXT, at INTEGER,
                      payload BLOB);
  CREATE INDEX events_customer ON events(customer);
""")
words = ["alpha", "beta", "gamma", "delta", "order", "refund", "login", "logout", "view"]
db.executemany("INSERT INTO customers VALUES (?,?,?,?)",
               ((i, f"customer {i}", f"c{i}@example.com", rnd.uniform(0, 1e4))
                for i in range(100000)))
target = int(mb * 1e6)
i = 0
while os.path.getsize(path) < target:
    rows = []
    for _ in range(20000):
        i += 1
        # half random bytes, half repetitive text: compresses like real data
        payload = rnd.randbytes(100) + (" ".join(rnd.choices(words, k=20))).encode()
        rows.append((i, rnd.randrange(100000), rnd.choice(words), 1700000000 + i, payload))
    db.executemany("INSERT INTO events VALUES (?,?,?,?,?)", rows)
    db.commit()
db.close()
PY
  rm -rf "$DATASET"
  mv "$DATASET.tmp" "$DATASET"
  log "dataset ready: $(du -sh --apparent-size "$DATASET" | cut -f1) apparent," \
      "$(find "$DATASET" -type f | wc -l) files"
}

# ensure_dataset: builds the data set, or reuses it while its size parameters are
# the same (BENCH_REBUILD=1 rebuilds it anyway).
ensure_dataset() {
  local params="gib=$BENCH_GIB sqlite_mb=$BENCH_SQLITE_MB sparse_gib=$BENCH_SPARSE_GIB"
  if [[ $BENCH_REBUILD == 1 || ! -f $DATASET/app.db || $(cat "$DATASET.params" 2>/dev/null) != "$params" ]]; then
    build_dataset
    echo "$params" >"$DATASET.params"
  else
    log "reusing dataset $DATASET (BENCH_REBUILD=1 to rebuild)"
  fi
}

# data_bytes DIR: bytes of real data (holes not counted), the base of MB/s figures.
data_bytes() {
  find "$1" -type f -printf '%s %b\n' | awk '{a=$1; b=$2*512; s+=(b<a?b:a)} END {printf "%d\n", s}'
}

# churn_day SRC DAY: one day of churn in a copy of the dataset (tree/ and app.db),
# deterministic per DAY: ~1% of the files get a few bytes rewritten, 5 are deleted
# and 5 added, and the database gets 0.5% new rows and 1% of its rows updated.
churn_day() { churn "$1" "$2" day; }

# churn_hour SRC HOUR: one hour of churn that leaves the data set's size as it was,
# deterministic per HOUR: ~0.05% of the files (at least one) get a few bytes
# rewritten, one is deleted and one added, and the database gets 0.02% new rows, as
# many of its oldest rows deleted, and 0.05% of its rows, spread at random, updated.
# 300 hours of it are issue 16's "slowly changing tree": what grows is the history.
churn_hour() { churn "$1" "$2" hour; }

churn() { # SRC N day|hour
  python3 - "$1" "$2" "$3" <<'PY'
import os, random, sqlite3, sys
src, n_, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rnd = random.Random(n_ if kind == "day" else 1_000_000 + n_)
files = []
for d, dirs, fs in os.walk(os.path.join(src, "tree")):
    dirs.sort()
    for f in sorted(fs):
        p = os.path.join(d, f)
        if os.path.isfile(p) and not os.path.islink(p) and f != "sparse.img" and "hardlinks" not in p:
            files.append(p)
def rewrite(paths):
    for p in paths:
        size = os.path.getsize(p)
        os.chmod(p, 0o644)
        with open(p, "r+b") as f:
            f.seek(rnd.randrange(size) if size else 0)
            f.write(rnd.randbytes(min(4096, max(1, size // 10))))
new = os.path.join(src, "tree", "new-files")
db = sqlite3.connect(os.path.join(src, "app.db"))
if kind == "day":
    n = max(1, len(files) // 100)
    picked = rnd.sample(files, n + 5)
    rewrite(picked[:n])
    for p in picked[n:]:
        os.unlink(p)
    new = os.path.join(new, f"day-{n_}")
    os.makedirs(new, exist_ok=True)
    for i in range(5):
        with open(os.path.join(new, f"new-{i}.bin"), "wb") as f:
            f.write(rnd.randbytes(64 * 1024))
    (count,) = db.execute("SELECT max(id) FROM events").fetchone()
    db.executemany("INSERT INTO events VALUES (?,?,?,?,?)",
                   ((count + i + 1, rnd.randrange(100000), "new", 1800000000 + i, rnd.randbytes(120))
                    for i in range(count // 200)))
    start = rnd.randrange(1, count - count // 100)
    db.executemany("UPDATE events SET kind = 'churned', payload = ? WHERE id = ?",
                   ((rnd.randbytes(120), i) for i in range(start, start + count // 100)))
else:
    picked = rnd.sample(files, max(1, len(files) // 2000) + 1)
    rewrite(picked[:-1])
    os.unlink(picked[-1])
    os.makedirs(new, exist_ok=True)
    with open(os.path.join(new, f"hour-{n_}.bin"), "wb") as f:
        f.write(rnd.randbytes(rnd.randrange(1024, 64 * 1024)))
    (low, high, count) = db.execute("SELECT min(id), max(id), count(*) FROM events").fetchone()
    n = max(1, count // 5000)
    db.executemany("INSERT INTO events VALUES (?,?,?,?,?)",
                   ((high + i + 1, rnd.randrange(100000), "new", 1800000000 + i, rnd.randbytes(120))
                    for i in range(n)))
    db.execute("DELETE FROM events WHERE id < ?", (low + n,))
    db.executemany("UPDATE events SET kind = 'churned', payload = ? WHERE id = ?",
                   ((rnd.randbytes(120), rnd.randrange(low + n, high)) for _ in range(count // 2000)))
db.commit()
db.close()
PY
}
