#!/usr/bin/env bash
# A million small files (issue 16): envsnap vs restic (and rustic when installed) on a
# generated tree of MILLION_FILES files with real-looking sizes and a deep directory
# structure: first backup, a daily backup after 0.1% of the files changed, and a full
# restore into an empty directory. envsnap runs as the daemon, driven by envsnapctl;
# its peak memory is measured per operation. See benches/README.md.
#
#   bash benches/million.sh                                  # 1,000,000 files
#   MILLION_FILES=250000 bash benches/million.sh             # the same at 250k
#   MILLION_FILES=20000 BENCH_SETTLE=5 bash benches/million.sh   # quick
#   ENVSNAP_BIN=target/release bash benches/million.sh       # prebuilt binaries, no build
set -euo pipefail

# ---------------------------------------------------------------- settings --
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MILLION_FILES=${MILLION_FILES:-1000000}         # files in the generated tree
MILLION_SEED=${MILLION_SEED:-16}                # the tree, and the files the day changes
BENCH_DIR=${BENCH_DIR:-/tmp/envsnap-million}
BENCH_SETTLE=${BENCH_SETTLE:-30}                # seconds after a sync before each restore
BENCH_VERIFY=${BENCH_VERIFY:-sample}            # sample | full (diff -r) | none
BENCH_DELETE=${BENCH_DELETE:-end}               # restores deleted at the end | between tools
BENCH_DELETE_GAP=${BENCH_DELETE_GAP:-400}       # with `between`: seconds from a deletion to the next restore
BENCH_KEEP=${BENCH_KEEP:-0}                     # keep the run dir (repositories, restores)
if [[ -z ${BENCH_TOOLS:-} ]]; then
  BENCH_TOOLS="envsnap restic"
  command -v rustic >/dev/null && BENCH_TOOLS+=" rustic"   # compared only when installed
fi
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)

TREE=$BENCH_DIR/tree            # the pristine tree, built once, reused for the same count
TREE_META=$BENCH_DIR/tree.meta  # its parameters, written once it is complete
TREE_FILES=$BENCH_DIR/tree.files  # its files' relative paths, in generation order
RUN=$BENCH_DIR/run              # everything of one run; wiped at the start
SRC=$RUN/src                    # the copy the tools back up (and the day changes)
ROWS=$BENCH_DIR/rows-$MILLION_FILES.tsv   # tool, operation, wall s, peak RSS KiB, CPU s
RESULTS=$BENCH_DIR/results.md

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
has_tool() { [[ " $BENCH_TOOLS " == *" $1 "* ]]; }
now_s() { date +%s.%N; }

for t in $BENCH_TOOLS; do
  case $t in envsnap|restic|rustic) ;; *) die "unknown tool '$t' in BENCH_TOOLS" ;; esac
done
has_tool restic || die "restic is the baseline: BENCH_TOOLS must include it"
case $BENCH_VERIFY in sample|full|none) ;; *) die "BENCH_VERIFY: sample, full or none" ;; esac
case $BENCH_DELETE in end|between) ;; *) die "BENCH_DELETE: end or between" ;; esac
((MILLION_FILES >= 1000)) || die "MILLION_FILES must be at least 1000"

# ----------------------------------------------------------- prerequisites --
for t in python3 /usr/bin/time; do command -v "$t" >/dev/null || die "$t is needed"; done
has_tool restic && { command -v restic >/dev/null || die "restic is needed (apt-get install restic)"; }
has_tool rustic && { command -v rustic >/dev/null || die "rustic is not installed (cargo install rustic-rs)"; }
if has_tool envsnap; then
  # shellcheck source=benches/bins.sh
  source "$REPO_ROOT/benches/bins.sh"
  release_bins
fi

# ------------------------------------------------------------------- tree --
# build_tree: the pristine tree, generated deterministically from MILLION_SEED. Each
# directory has 20-60 entries: files and a few subdirectories whose shares of the
# files below are uneven, so branches end at depths 3 to 7 (a few directories are
# empty). Sizes: 3% empty, most log-normal around 2 KiB (100 B - 16 KiB), 1% a Pareto
# tail from 16 KiB to 1 MiB: about 4.8 KiB a file on average. Content: 88% text-like
# files (words in lines, a few random bytes here and there), 12% random bytes (images,
# archives): zstd gets the whole to about half. Every file is a sequence of slices at
# random offsets of two 16 MiB pools, so no chunk repeats between files: the tools
# cannot deduplicate what a real tree would not let them.
build_tree() {
  log "generating $MILLION_FILES files in $TREE (seed $MILLION_SEED)"
  rm -rf "$TREE" "$TREE.tmp" "$TREE_META"
  python3 - "$TREE.tmp" "$MILLION_FILES" "$MILLION_SEED" "$TREE_FILES" <<'PY'
import math, os, random, sys

root, n_files, seed, list_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = random.Random(seed)
MIN_DEPTH, MAX_DEPTH = 3, 7

letters = "etaoinshrdlucmfwypvbgkjqxz"
freq = [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.0,
        2.0, 1.9, 1.5, 1.0, 0.8, 0.2, 0.2, 0.2, 0.1, 0.1]
vocab = sorted({"".join(rng.choices(letters, weights=freq, k=rng.randint(2, 11))) for _ in range(8000)})
rng.shuffle(vocab)
zipf = [1 / (i + 1) for i in range(len(vocab))]

def text_pool(size):
    words = rng.choices(vocab, weights=zipf, k=size // 6 + 1000)
    out, i, total = [], 0, 0
    while total < size:
        k = rng.randint(3, 14)
        line = " " * (4 * rng.randint(0, 3)) + " ".join(words[i:i + k]) + rng.choice(";;,.:{}()") + "\n"
        i = (i + k) % (len(words) - 20)
        out.append(line)
        total += len(line)
    return "".join(out).encode()[:size]

POOL = 16 << 20
TEXT = text_pool(POOL)
RAND = rng.randbytes(POOL)

def size_of():
    u = rng.random()
    if u < 0.03:
        return 0
    if u < 0.04:
        return min(int(16384 * rng.paretovariate(1.1)), 1 << 20)
    return max(1, min(int(rng.lognormvariate(math.log(2048), 1.2)), 1 << 20))

def content(size, binary):
    parts, left = [], size
    while left > 0:
        k = min(left, rng.randint(512, 8192))
        pool = RAND if binary or rng.random() < 0.03 else TEXT
        if pool is RAND and not binary:
            k = min(k, rng.randint(16, 256))
        off = rng.randrange(POOL - k)
        parts.append(pool[off:off + k])
        left -= k
    return b"".join(parts)

TEXT_EXT = [".php", ".js", ".css", ".html", ".json", ".md", ".txt", ".py", ".yml", ".xml", ".c", ".h", ".rs", ""]
BIN_EXT = [".png", ".jpg", ".gif", ".woff2", ".gz", ".pdf", ".bin"]

def name(taken, ext):
    while True:
        n = rng.choice(vocab)
        if rng.random() < 0.4:
            n += rng.choice("_-.") + rng.choice(vocab)
        n += ext
        if n not in taken:
            taken.add(n)
            return n

paths, dirs, total_bytes, leaf_depths = [], 0, 0, {}

def write_files(path, rel, count, taken):
    global total_bytes
    for _ in range(count):
        binary = rng.random() < 0.12
        fn = name(taken, rng.choice(BIN_EXT if binary else TEXT_EXT))
        data = content(size_of(), binary)
        total_bytes += len(data)
        paths.append(rel + fn)
        fd = os.open(os.path.join(path, fn), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

def build(path, rel, depth, quota):
    global dirs
    dirs += 1
    entries = rng.randint(20, 60)
    taken = set()
    if depth >= MAX_DEPTH or (depth >= MIN_DEPTH and quota <= entries):
        leaf_depths[depth] = leaf_depths.get(depth, 0) + 1
        write_files(path, rel, quota, taken)
        return
    # Enough subdirectories for the rest to fit, at ~35 files a directory, by a depth
    # drawn for this directory: some branches end early, some go to the bottom.
    target = rng.randint(max(MIN_DEPTH, depth + 1), MAX_DEPTH)
    need = (quota / 35) ** (1 / (target - depth))
    nsub = max(2, min(entries - 5, round(need * rng.uniform(0.8, 1.6))))
    nfiles = min(quota, entries - nsub) if depth >= 1 else min(quota, rng.randint(0, 6))
    rest = quota - nfiles
    weights = [rng.lognormvariate(0, 0.9) for _ in range(nsub)]
    shares = [int(rest * w / sum(weights)) for w in weights]
    shares[weights.index(max(weights))] += rest - sum(shares)
    write_files(path, rel, nfiles, taken)
    for share in shares:
        sub = name(taken, "")
        os.mkdir(os.path.join(path, sub))
        build(os.path.join(path, sub), rel + sub + "/", depth + 1, share)

os.makedirs(root)
build(root, "", 0, n_files)
with open(list_path, "w") as f:
    f.write("\n".join(paths) + "\n")
print(f"{len(paths)} files, {dirs} directories, {total_bytes} bytes; directories holding "
      f"only files, by depth: {dict(sorted(leaf_depths.items()))}", file=sys.stderr)
PY
  mv "$TREE.tmp" "$TREE"
  echo "files=$MILLION_FILES seed=$MILLION_SEED generator=1" >"$TREE_META"
}

if [[ $(cat "$TREE_META" 2>/dev/null) == "files=$MILLION_FILES seed=$MILLION_SEED generator=1" && -d $TREE ]]; then
  log "reusing $TREE ($MILLION_FILES files; delete $TREE_META to rebuild)"
else
  build_tree
fi

# ------------------------------------------------------------------ run dir --
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ $BENCH_KEEP == 1 ]] || rm -rf "$RUN"
}
trap cleanup EXIT

log "copying the tree to $SRC"
rm -rf "$RUN"
mkdir -p "$RUN"
# A copy, so that the day's changes never touch the pristine tree. Copying also leaves
# every file and inode in the page cache: the tools are measured on a warm cache.
cp -a "$TREE" "$SRC"
: >"$ROWS"

# measure TOOL OPERATION CMD...: CMD after a sync, timed; for a restore the final
# `sync -f` of $SYNC_DIR is inside the timing, so the data is on disk for every tool
# (envsnapd syncs what it writes, restic does not). One row to $ROWS. envsnap's
# memory and CPU are envsnapd's: VmHWM reset through clear_refs before the command
# and read right after it, CPU from /proc/PID/stat; the others' come from /usr/bin/time.
measure() {
  local tool=$1 op=$2 t0 t1 rss user sys cpu0=0 cpu1; shift 2
  log "$tool: $op: $*"
  sync
  if [[ $tool == envsnap ]]; then
    echo 5 >"/proc/$DAEMON_PID/clear_refs"
    cpu0=$(awk '{ print $14 + $15 }' "/proc/$DAEMON_PID/stat")
  fi
  local sampler=
  if [[ $tool == envsnap ]]; then sample_rss "$op" & sampler=$!; pids+=("$sampler"); fi
  t0=$(now_s)
  if ! /usr/bin/time -f '%M %U %S' -o "$RUN/time.out" "$@" >"$RUN/last.out" 2>"$RUN/last.err"; then
    tail -n 20 "$RUN/last.out" "$RUN/last.err" >&2
    die "$tool failed: $op"
  fi
  [[ $op == "full restore" ]] && sync -f "$SYNC_DIR"
  t1=$(now_s)
  [[ -n $sampler ]] && { kill "$sampler"; wait "$sampler" 2>/dev/null || true; }
  read -r rss user sys <"$RUN/time.out"
  local cpu
  cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')
  if [[ $tool == envsnap ]]; then
    rss=$(awk '/^VmHWM/ { print $2 }' "/proc/$DAEMON_PID/status")
    cpu1=$(awk '{ print $14 + $15 }' "/proc/$DAEMON_PID/stat")
    cpu=$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$(getconf CLK_TCK)" 'BEGIN { print (b - a) / hz }')
  fi
  printf '%s\t%s\t%.2f\t%s\t%.2f\n' "$tool" "$op" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
    "$rss" "$cpu" | tee -a "$ROWS" >&2
}

# sample_rss OPERATION: envsnapd's VmRSS every half second into $RSS_LOG (operation,
# time, KiB), until killed or the daemon is gone: where in an operation the peak comes.
RSS_LOG=$BENCH_DIR/envsnapd-rss-$MILLION_FILES.tsv
: >"$RSS_LOG"
sample_rss() {
  local line
  while sleep 0.5 && [[ -r /proc/$DAEMON_PID/status ]]; do
    while read -r line; do
      [[ $line == VmRSS:* ]] && printf '%s\t%s\t%s\n' "$1" "$EPOCHREALTIME" "${line//[^0-9]/}"
    done <"/proc/$DAEMON_PID/status"
  done >>"$RSS_LOG"
}

# ------------------------------------------------------------------ envsnap --
# One envsnapd for the run: environment `bench` backs up the tree as its `code` part;
# environment `restored` (same version, its code an empty directory) is where the
# full restore goes, with `restore restored BACKUP --from bench`.
ctl() { "$BIN/envsnapctl" --socket "$RUN/envsnap/envsnapd.sock" "$@"; }
start_daemon() {
  mkdir -p "$RUN/envsnap/state"
  cat >"$RUN/envsnap/envsnap.toml" <<TOML
[daemon]
host = "bench"
socket = "$RUN/envsnap/envsnapd.sock"
state_dir = "$RUN/envsnap/state"
[store]
url = "file://$RUN/envsnap/store"
[environments.bench]
version = "1.0"
code = "$SRC"
[environments.restored]
version = "1.0"
code = "$RUN/restore-envsnap"
TOML
  # debug: the phases of each backup (src/repo/phases.rs), a few lines per job
  NO_COLOR=1 ENVSNAP_LOG=info,envsnap=debug "$BIN/envsnapd" --config "$RUN/envsnap/envsnap.toml" >"$RUN/envsnapd.log" 2>&1 &
  DAEMON_PID=$!
  pids+=("$DAEMON_PID")
  local _
  for _ in $(seq 300); do ctl status >/dev/null 2>&1 && return; sleep 0.1; done
  tail -n 20 "$RUN/envsnapd.log" >&2
  die "envsnapd did not start"
}

# ----------------------------------------------------------------- the peers --
# Repositories on the same disk, fresh caches in the run dir; the password only in
# the environment (restic) or the profile file (rustic), never in argv.
export RESTIC_REPOSITORY=$RUN/restic-repo RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$RUN/restic-cache
rustic_profile() {
  cat >"$RUN/rustic.toml" <<TOML
[repository]
repository = "$RUN/rustic-repo"
password = "bench"
cache-dir = "$RUN/rustic-cache"
TOML
}

backup() { # TOOL NAME OPERATION
  case $1 in
    envsnap)
      measure envsnap "$3" "$BIN/envsnapctl" --socket "$RUN/envsnap/envsnapd.sock" \
        --json backup create bench --name "$2" --wait
      ctl --json prune >/dev/null ;;   # waits out the prune each backup starts (untimed)
    restic) measure restic "$3" restic backup --quiet "$SRC" ;;
    rustic) measure rustic "$3" rustic -P "$RUN/rustic" backup --no-progress "$SRC" ;;
  esac
}

# ------------------------------------------------------------------ checks --
# check_restore DIR: DIR holds what $SRC does (untimed): the same entries with the
# same types, modes, sizes and file mtimes, and the same content for every changed
# file and one file in 50 (BENCH_VERIFY=sample), or everything (full: diff -r).
listing() {
  (cd "$1" && find . -mindepth 1 \( -type d -printf 'd %m %P\n' \) -o -printf '%y %m %s %T@ %P\n') |
    LC_ALL=C sort
}
check_restore() {
  [[ $BENCH_VERIFY == none ]] && return 0
  log "checking the restore in $1"
  [[ -s $RUN/src.listing ]] || listing "$SRC" >"$RUN/src.listing"
  listing "$1" >"$RUN/restore.listing"
  if ! cmp -s "$RUN/src.listing" "$RUN/restore.listing"; then
    diff "$RUN/src.listing" "$RUN/restore.listing" | head -n 10 >&2
    die "the restore in $1 differs from the source (entries, modes, sizes or mtimes)"
  fi
  if [[ $BENCH_VERIFY == full ]]; then
    diff -r --no-dereference -q "$SRC" "$1" >&2 || die "the restore in $1 differs from the source"
    return
  fi
  python3 - "$SRC" "$1" "$TREE_FILES" "$RUN/changed.files" <<'PY' || die "the restore in $1 differs from the source"
import os, sys
src, dst, listed, changed = sys.argv[1:5]
files = open(listed).read().split("\n")[:-1]
sample = set(files[::50]) | set(open(changed).read().split("\n")[:-1])
for rel in sorted(sample):
    with open(os.path.join(src, rel), "rb") as a, open(os.path.join(dst, rel), "rb") as b:
        if a.read() != b.read():
            sys.exit(f"content differs: {rel}")
print(f"{len(sample)} files compared", file=sys.stderr)
PY
}

# --------------------------------------------------------------- restores --
LAST_DELETE=0
restore() { # TOOL BACKUP
  local tool=$1 dir=$RUN/restore-$1 pause=$BENCH_SETTLE since
  mkdir "$dir"
  sync
  # This machine's ext4 has no journal: for a few minutes after files were deleted, the
  # inode allocator skips their inodes (`recently_deleted`: 60 s, 360 s while the inode
  # table block is dirty), which slows whatever creates files next. With
  # BENCH_DELETE=between, a restore waits until the last deletion is that old.
  if ((LAST_DELETE > 0)); then
    since=$(($(date +%s) - LAST_DELETE))
    ((BENCH_DELETE_GAP - since > pause)) && pause=$((BENCH_DELETE_GAP - since))
  fi
  log "$tool: waiting ${pause}s for the disk to settle"
  sleep "$pause"
  SYNC_DIR=$dir
  case $tool in
    envsnap)
      measure envsnap "full restore" "$BIN/envsnapctl" --socket "$RUN/envsnap/envsnapd.sock" \
        --json restore restored "$2" --from bench --yes --wait --no-safety-backup
      check_restore "$dir" ;;
    restic)
      measure restic "full restore" restic restore latest --target "$dir"
      check_restore "$dir$SRC" ;;   # restic restores under the source's absolute path
    rustic)
      measure rustic "full restore" rustic -P "$RUN/rustic" restore --no-progress latest "$dir"
      check_restore "$dir$SRC" ;;
  esac
  if [[ $BENCH_DELETE == between ]]; then
    log "$tool: deleting its restore"
    rm -rf "$dir"
    sync
    LAST_DELETE=$(date +%s)
  fi
}

# ------------------------------------------------------------- the run --
has_tool envsnap && start_daemon
has_tool restic && restic init >/dev/null
if has_tool rustic; then rustic_profile; rustic -P "$RUN/rustic" init >/dev/null 2>&1; fi

for t in $BENCH_TOOLS; do backup "$t" first "first backup"; done

# The day: 0.1% of the files (a seeded sample) change, the same change for every tool.
# Most get a few bytes rewritten in place; one in five also grows by a KiB of text,
# empty ones get their first bytes. Each file's mtime moves, as an editor's would.
log "changing 0.1% of the files"
python3 - "$SRC" "$TREE_FILES" "$MILLION_SEED" "$RUN/changed.files" <<'PY'
import os, random, sys
src, listed, seed, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
files = open(listed).read().split("\n")[:-1]
rng = random.Random(seed + 1)
picked = sorted(rng.sample(files, max(1, len(files) // 1000)))
for rel in picked:
    path = os.path.join(src, rel)
    size = os.path.getsize(path)
    fd = os.open(path, os.O_WRONLY)
    try:
        if size:
            n = min(size, rng.randint(1, 256))
            os.pwrite(fd, rng.randbytes(n), rng.randrange(size - n + 1))
        if size == 0 or rng.random() < 0.2:
            os.pwrite(fd, (" ".join(str(rng.random()) for _ in range(60)) + "\n").encode()[:1024], size)
    finally:
        os.close(fd)
with open(out, "w") as f:
    f.write("\n".join(picked) + "\n")
print(f"{len(picked)} files changed", file=sys.stderr)
PY

for t in $BENCH_TOOLS; do backup "$t" daily "daily backup"; done
for t in $BENCH_TOOLS; do restore "$t" daily; done

ENVSNAPD_LOG_ERRORS=0
if has_tool envsnap; then
  ENVSNAPD_LOG_ERRORS=$(grep -c -E ' (ERROR|WARN) ' "$RUN/envsnapd.log" || true)
  kill "$DAEMON_PID"
  wait "$DAEMON_PID" 2>/dev/null || true
  cp "$RUN/envsnapd.log" "$BENCH_DIR/envsnapd-$MILLION_FILES.log"   # outlives the run dir
fi
declare -A STORED
for t in $BENCH_TOOLS; do
  case $t in
    envsnap) STORED[$t]=$(du -sb "$RUN/envsnap/store" | cut -f1) ;;
    *) STORED[$t]=$(du -sb "$RUN/$t-repo" | cut -f1) ;;
  esac
done

# ------------------------------------------------------------------ report --
render() {
  local stored="" t
  for t in $BENCH_TOOLS; do stored+="$t $((STORED[$t] / 1048576)) MiB, "; done
  echo "# A million files: envsnap vs ${BENCH_TOOLS#envsnap }, $MILLION_FILES files"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), host: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- tree: $MILLION_FILES files ($(du -sb "$TREE" | cut -f1) bytes, $(find "$TREE" -type d | wc -l) directories, seed $MILLION_SEED); the day changed $(wc -l <"$RUN/changed.files") files"
  echo "- $(restic version | cut -d' ' -f1-2), $(rustic --version 2>/dev/null || echo 'rustic not installed: skipped'), envsnap ${BIN:+$BIN/envsnapd built $(date -u -r "$BIN/envsnapd" '+%Y-%m-%d %H:%M UTC'), }checkout at the report $(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo '?')"
  echo "- repositories after the run: ${stored%, }; envsnapd log: $ENVSNAPD_LOG_ERRORS WARN/ERROR lines"
  echo "- restores: sync, then $BENCH_SETTLE s pause; timed until \`sync -f\` returned; checked: $BENCH_VERIFY"
  echo
  python3 - "$ROWS" "$BENCH_TOOLS" "$BENCH_DIR" "$MILLION_FILES" <<'PY'
import glob, os, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
tools = sys.argv[2].split()
wall = {(r[0], r[1]): float(r[2]) for r in rows}
rss = {(r[0], r[1]): int(r[3]) / 1024 for r in rows}
cpu = {(r[0], r[1]): float(r[4]) for r in rows}
peers = [t for t in tools if t != "envsnap"]
targets = {"first backup": None, "daily backup": 0.3, "full restore": 0.7}
head = "| operation | " + " | ".join(f"{t} s" for t in tools)
head += " | envsnap ÷ restic | target | met | envsnapd peak RSS MiB |"
if "rustic" in tools:
    head += " envsnap ÷ rustic |"
print(head)
print("|---|" + "---:|" * len(tools) + "---:|---:|---|---:|" + ("---:|" if "rustic" in tools else ""))
for op, target in targets.items():
    cells = [f"{wall[(t, op)]:.2f}" if (t, op) in wall else "-" for t in tools]
    line = f"| {op} | " + " | ".join(cells)
    if ("envsnap", op) in wall:
        ratio = wall[("envsnap", op)] / wall[("restic", op)]
        met = "-" if target is None else ("met" if ratio <= target else "**missed**")
        line += f" | {ratio:.2f} | {'-' if target is None else f'≤ {target}'} | {met} | {rss[('envsnap', op)]:.0f} |"
        if "rustic" in tools:
            line += f" {wall[('envsnap', op)] / wall[('rustic', op)]:.2f} |"
    else:
        line += " | - | - | - | - |" + (" - |" if "rustic" in tools else "")
    print(line)
print()
if "envsnap" in tools:
    peak = max(v for (t, _), v in rss.items() if t == "envsnap")
    print(f"envsnapd's peak RSS over the three operations: {peak:.0f} MiB (target < 192 MiB): "
          f"{'met' if peak < 192 else '**missed**'}.")
    # Independent of the file count: set against the other counts measured in BENCH_DIR.
    here = int(sys.argv[4])
    for other in sorted(glob.glob(os.path.join(sys.argv[3], "rows-*.tsv"))):
        n = int(other.rsplit("-", 1)[1].split(".")[0])
        if n == here:
            continue
        o = [l.rstrip("\n").split("\t") for l in open(other) if l.strip()]
        op = max((int(r[3]) / 1024 for r in o if r[0] == "envsnap"), default=None)
        if op:
            print(f"At {n} files (an earlier run in this directory): {op:.0f} MiB; "
                  f"{here} / {n} files: x{peak / op:.2f} memory for x{here / n:.2f} files.")
    print()
print("Every tool, every operation (CPU: envsnapd's for envsnap, user + system for the others):")
print()
print("| tool | operation | wall s | CPU s | peak RSS MiB |")
print("|---|---|---:|---:|---:|")
for r in rows:
    print(f"| {r[0]} | {r[1]} | {float(r[2]):.2f} | {float(r[4]):.2f} | {int(r[3]) / 1024:.0f} |")
PY
}

render | tee "$RESULTS"
log "results written to $RESULTS (rows: $ROWS)"
