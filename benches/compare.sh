#!/usr/bin/env bash
# Compare envsnap's engine with restic and borg on the same data, in one run,
# with a warm page cache. See benches/README.md for the knobs and what is measured.
#
#   bash benches/compare.sh
#   BENCH_TOOLS="restic borg" BENCH_GIB=0.3 bash benches/compare.sh
set -euo pipefail

# ---------------------------------------------------------------- settings --
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/envsnap-bench}
BENCH_GIB=${BENCH_GIB:-1.5}                     # size of the copied real files
BENCH_SQLITE_MB=${BENCH_SQLITE_MB:-200}         # size of the SQLite stream file
BENCH_SPARSE_GIB=${BENCH_SPARSE_GIB:-1}         # apparent size of the sparse file
BENCH_TOOLS=${BENCH_TOOLS:-"envsnap restic borg"}
BENCH_VERIFY=${BENCH_VERIFY:-1}                 # diff restored data (untimed)
BENCH_PEER_SPARSE=${BENCH_PEER_SPARSE:-0}       # give borg `extract --sparse`
BENCH_REBUILD=${BENCH_REBUILD:-0}               # rebuild the dataset even if present
BENCH_DB_CHURN=${BENCH_DB_CHURN:-hot}           # SQLite updates: hot (one range) | random
BENCH_ENGINE=${BENCH_ENGINE:-}                  # prebuilt engine driver: skips cargo build
BENCH_KEEP=${BENCH_KEEP:-0}                     # keep the run dir (repos, copies) afterwards
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)             # absolute: restore paths derive from it

DATASET=$BENCH_DIR/dataset      # pristine data, built once and reused
RUN=$BENCH_DIR/run              # everything of one run; wiped at the start
SRC=$RUN/src                    # working copy the tools back up (gets churned)
ROWS=$RUN/rows.tsv              # raw measurements, rendered at the end
RESULTS=$BENCH_DIR/results.md
ENGINE=${BENCH_ENGINE:-$REPO_ROOT/target/release/examples/envsnap-engine}

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
has_tool() { [[ " $BENCH_TOOLS " == *" $1 "* ]]; }

for t in $BENCH_TOOLS; do
  case $t in envsnap|restic|borg) ;; *) die "unknown tool '$t' in BENCH_TOOLS" ;; esac
done
has_tool restic || die "restic is the baseline of every ratio; keep it in BENCH_TOOLS"

# ----------------------------------------------------------- prerequisites --
# Install what is missing (as root, via apt); skip apt when everything is there.
need_pkgs=()
command -v restic >/dev/null || need_pkgs+=(restic)
command -v borg >/dev/null || need_pkgs+=(borgbackup)
[[ -x /usr/bin/time ]] || need_pkgs+=(time)
command -v python3 >/dev/null || need_pkgs+=(python3)
if ((${#need_pkgs[@]})); then
  [[ $(id -u) == 0 ]] || die "missing ${need_pkgs[*]}; run as root or install them"
  log "installing ${need_pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_pkgs[@]}" >/dev/null ||
    { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_pkgs[@]}" >/dev/null; }
fi

if has_tool envsnap && [[ -z $BENCH_ENGINE ]]; then
  log "building the engine driver (cargo build --release --example envsnap-engine)"
  if ! (cd "$REPO_ROOT" && cargo build --release --example envsnap-engine >"$BENCH_DIR/cargo.log" 2>&1); then
    tail -n 30 "$BENCH_DIR/cargo.log" >&2
    die "building the envsnap-engine example failed (log: $BENCH_DIR/cargo.log);" \
        "run only the peers with BENCH_TOOLS=\"restic borg\""
  fi
fi
has_tool envsnap && { [[ -x $ENGINE ]] || die "engine driver $ENGINE is missing"; }

# ----------------------------------------------------------------- dataset --
# shellcheck source=benches/dataset.sh
source "$REPO_ROOT/benches/dataset.sh"
ensure_dataset

# A fresh working copy per run: churn modifies it, the pristine set stays.
log "preparing run dir $RUN"
rm -rf "$RUN"
mkdir -p "$RUN"
cp -a --sparse=always "$DATASET" "$SRC"
: >"$ROWS"

# Bytes of real data (holes not counted): the base of every MB/s figure.
DATA_BYTES=$(data_bytes "$SRC")
log "data: $DATA_BYTES bytes of real data, $(find "$SRC" -type f | wc -l) files"

# Warm the page cache: every tool then reads from memory, none pays for disk.
log "warming the page cache"
find "$SRC" -type f -exec cat {} + >/dev/null

# ------------------------------------------------------------- measurement --
# measure SCENARIO TOOL CMD...
#   Runs CMD under /usr/bin/time (wall seconds, peak RSS KiB) and records a row.
#   Several calls with the same scenario and tool add up (wall summed, RSS max).
LAST_OUT=$RUN/last.out
measure() {
  local scenario=$1 tool=$2; shift 2
  local tf=$RUN/time.out
  log "$scenario: $tool: $*"
  if ! /usr/bin/time -f '%e %M' -o "$tf" "$@" >"$LAST_OUT" 2>"$RUN/last.err"; then
    tail -n 20 "$RUN/last.err" >&2
    die "$tool failed in scenario '$scenario'"
  fi
  read -r wall rss <"$tf"
  printf '%s\t%s\t%s\t%s\n' "$scenario" "$tool" "$wall" "$rss" >>"$RUN/time.tsv"
}
repo_bytes() { du -sb "$1" | cut -f1; }
# record SCENARIO TOOL STORED REPO_BYTES NOTE: one result row (sums time.tsv)
record() {
  local scenario=$1 tool=$2 stored=$3 repo=$4 note=${5:-}
  local wall rss
  read -r wall rss < <(awk -F'\t' -v s="$scenario" -v t="$tool" \
    '$1==s && $2==t {k++; w+=$3; if ($4>r) r=$4}
     END {if (k) printf "%.2f %d\n", w, r; else print "- -"}' "$RUN/time.tsv")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$tool" "$wall" "$rss" "$stored" "$repo" "$note" >>"$ROWS"
}
json_field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])[sys.argv[1]])' "$1" <"$LAST_OUT"; }
: >"$RUN/time.tsv"

# Each tool gets its own repository and caches under $RUN, so nothing leaks
# between runs (borg's and restic's caches would otherwise speed up a rerun).
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$RUN/restic-repo RESTIC_CACHE_DIR=$RUN/restic-cache
# borg without encryption (-e none): restic always encrypts, envsnap's default
# here is unencrypted; see README for the fairness note.
export BORG_REPO=$RUN/borg-repo BORG_BASE_DIR=$RUN/borg-base BORG_PASSPHRASE=""
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
ES_REPO=$RUN/envsnap-repo ES_STATE=$RUN/envsnap-state

has_tool envsnap && { "$ENGINE" init "$ES_REPO" >/dev/null; mkdir -p "$ES_STATE"; }
has_tool restic && restic init >/dev/null
has_tool borg && borg init -e none >/dev/null

# backup SCENARIO TOOL: one backup of tree + SQLite file, then a result row.
borg_n=0
backup() {
  local scenario=$1 tool=$2 before after stored
  case $tool in
    envsnap)
      before=$(repo_bytes "$ES_REPO")
      measure "$scenario" envsnap "$ENGINE" backup "$ES_REPO" --state "$ES_STATE" --env bench \
        --tree "data=$SRC/tree" --stream "db=$SRC/app.db"
      stored=$(json_field stored)
      after=$(repo_bytes "$ES_REPO")
      record "$scenario" envsnap "$stored" "$after" "repo grew $((after - before))" ;;
    restic)
      before=$(repo_bytes "$RESTIC_REPOSITORY")
      measure "$scenario" restic restic backup --quiet "$SRC/tree" "$SRC/app.db"
      after=$(repo_bytes "$RESTIC_REPOSITORY")
      record "$scenario" restic $((after - before)) "$after" "repo growth" ;;
    borg)
      before=$(repo_bytes "$BORG_REPO")
      borg_n=$((borg_n + 1))
      measure "$scenario" borg borg create --compression zstd,3 "::b$borg_n" "$SRC/tree" "$SRC/app.db"
      after=$(repo_bytes "$BORG_REPO")
      record "$scenario" borg $((after - before)) "$after" "repo growth" ;;
  esac
}

# Deterministic ~1% churn: rewrite bytes in 1% of files, add and delete a few,
# and update ~1% of the SQLite rows.
churn() {
  python3 - "$SRC" "$BENCH_DB_CHURN" <<'PY'
import os, random, sqlite3, sys
src, db_churn = sys.argv[1], sys.argv[2]
rnd = random.Random(7)
files = []
for d, dirs, fs in os.walk(os.path.join(src, "tree")):
    dirs.sort()
    for f in sorted(fs):
        p = os.path.join(d, f)
        if os.path.isfile(p) and not os.path.islink(p) and f != "sparse.img" and "hardlinks" not in p:
            files.append(p)
n = max(1, len(files) // 100)
picked = rnd.sample(files, n + 10)
for p in picked[:n]:                       # rewrite a few bytes in place
    size = os.path.getsize(p)
    os.chmod(p, 0o644)
    with open(p, "r+b") as f:
        f.seek(rnd.randrange(size) if size else 0)
        f.write(rnd.randbytes(min(4096, max(1, size // 10))))
for p in picked[n:n + 10]:                 # delete a few
    os.unlink(p)
new = os.path.join(src, "tree", "new-files")
os.makedirs(new, exist_ok=True)
for i in range(10):                        # add a few
    with open(os.path.join(new, f"new-{i}.bin"), "wb") as f:
        f.write(rnd.randbytes(64 * 1024))
db = sqlite3.connect(os.path.join(src, "app.db"))
(count,) = db.execute("SELECT max(id) FROM events").fetchone()
# "hot": one contiguous range of rows, like an application updating recent
# records; "random": rows spread over the whole file, which touches most pages
# and so most content-defined chunks of every tool.
if db_churn == "random":
    ids = rnd.sample(range(1, count + 1), count // 100)
else:
    start = rnd.randrange(1, count - count // 100)
    ids = range(start, start + count // 100)
db.executemany("UPDATE events SET kind = 'churned', payload = ? WHERE id = ?",
               ((rnd.randbytes(120), i) for i in ids))
db.commit()
db.close()
print(f"churn: {n} files rewritten, 10 deleted, 10 added, {len(ids)} rows updated", file=sys.stderr)
PY
}

# restore SCENARIO TOOL DIR: full restore of the latest backup into empty DIR.
# Afterwards DIR/tree and DIR/app.db hold the data, whatever the tool's layout.
restore() {
  local scenario=$1 tool=$2 dir=$3 raw=$3.raw
  mkdir -p "$dir"
  case $tool in
    envsnap)
      measure "$scenario" envsnap "$ENGINE" restore "$ES_REPO" --state "$ES_STATE" --env bench \
        --backup latest --part tree:data --into "$dir/tree"
      measure "$scenario" envsnap "$ENGINE" restore "$ES_REPO" --state "$ES_STATE" --env bench \
        --backup latest --part stream:db --out "$dir/app.db" ;;
    restic)
      # restic restores under the absolute source path
      mkdir -p "$raw"
      measure "$scenario" restic restic restore latest --target "$raw"
      mv "$raw$SRC/tree" "$raw$SRC/app.db" "$dir/" ;;
    borg)
      local sparse=()
      [[ $BENCH_PEER_SPARSE == 1 ]] && sparse=(--sparse)
      mkdir -p "$raw"
      # borg extracts into the current directory, paths without the leading /
      # shellcheck disable=SC2016  # the inner bash expands $1 and $@
      measure "$scenario" borg bash -c 'cd "$1" && shift && exec "$@"' _ "$raw" \
        borg extract "${sparse[@]}" "::b$borg_n"
      mv "$raw$SRC/tree" "$raw$SRC/app.db" "$dir/" ;;
  esac
  rm -rf "$raw"
  local note
  note="sparse file uses $(du -k "$dir/tree/sparse.img" | cut -f1) KiB"
  note+=" (source $(du -k "$SRC/tree/sparse.img" | cut -f1) KiB)"
  if [[ $BENCH_VERIFY == 1 ]]; then
    if diff -r --no-dereference "$SRC" "$dir" >/dev/null 2>&1; then note+=", content ok"
    else note+=", CONTENT DIFFERS"; fi
  fi
  record "$scenario" "$tool" - - "$note"
}

# ---------------------------------------------------------------- scenarios --
A="a. first backup" B="b. unchanged" C="c. 1% churn" D="d. full restore" E="e. delta restore"
for t in $BENCH_TOOLS; do backup "$A" "$t"; done
for t in $BENCH_TOOLS; do backup "$B" "$t"; done

# Scenario e needs a pre-churn copy to restore the post-churn backup into.
has_tool envsnap && cp -a --sparse=always "$SRC/tree" "$RUN/delta"
log "applying churn"
churn
for t in $BENCH_TOOLS; do backup "$C" "$t"; done

for t in $BENCH_TOOLS; do restore "$D" "$t" "$RUN/restore-$t"; rm -rf "$RUN/restore-$t"; done

if has_tool envsnap; then
  measure "$E" envsnap "$ENGINE" restore "$ES_REPO" --state "$ES_STATE" --env bench \
    --backup latest --part tree:data --into "$RUN/delta"
  note="pre-churn tree -> latest"
  if [[ $BENCH_VERIFY == 1 ]]; then
    if diff -r --no-dereference "$SRC/tree" "$RUN/delta" >/dev/null 2>&1; then note+=", content ok"
    else note+=", CONTENT DIFFERS"; fi
  fi
  record "$E" envsnap - - "$note"
fi
for t in restic borg; do has_tool "$t" && record "$E" "$t" - - "n/a: no delta restore measured"; done

# ------------------------------------------------------------------ report --
# Rows -> markdown table. MB/s is real data bytes / wall time (MB = 10^6 B);
# "x restic" is this tool's wall time divided by restic's in the same scenario.
render() {
  echo "# envsnap vs restic vs borg"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), host: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM"
  echo "- data: $DATA_BYTES bytes of real data ($(find "$SRC" -type f | wc -l) files after churn)," \
       "sparse file ${BENCH_SPARSE_GIB} GiB apparent, SQLite ${BENCH_SQLITE_MB} MB; warm page cache"
  echo "- $(restic version | cut -d' ' -f1-2), $(borg --version)$(has_tool envsnap && echo ", envsnap $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')")"
  echo
  echo "| scenario | tool | wall s | MB/s | peak RSS MiB | stored bytes | repo MiB | time x restic | notes |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---|"
  awk -F'\t' -v bytes="$DATA_BYTES" '
    { n++; sc[n]=$1; tl[n]=$2; w[n]=$3; r[n]=$4; st[n]=$5; rp[n]=$6; no[n]=$7
      if ($2 == "restic" && $3 != "-") base[$1] = $3 }
    END {
      for (i = 1; i <= n; i++) {
        measured = (w[i] != "-")
        wall = measured ? sprintf("%.2f", w[i]) : "-"
        mbs  = measured && w[i] > 0 ? sprintf("%.0f", bytes / 1e6 / w[i]) : "-"
        rss  = measured ? sprintf("%.0f", r[i] / 1024) : "-"
        repo = (rp[i] != "-" && rp[i] != "") ? sprintf("%.1f", rp[i] / 1048576) : "-"
        ratio = (measured && base[sc[i]] > 0) ? sprintf("%.2f", w[i] / base[sc[i]]) : "-"
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
               sc[i], tl[i], wall, mbs, rss, st[i], repo, ratio, no[i]
      }
    }' "$ROWS"
}
render | tee "$RESULTS"
log "results written to $RESULTS"
# The run dir holds several copies of the data; keep it only on request.
[[ $BENCH_KEEP == 1 ]] || rm -rf "$RUN"
