#!/usr/bin/env bash
# The 13-day churn scenario of issue 16, envsnap side by side with restic (and rustic
# when it is on PATH), on the shared data set of ../shared/bench: a first backup (FIRST_ROUNDS
# rounds, each tool starting from nothing again, reported as medians), then
# CHURN_DAYS times a day of churn (mutate.sh) followed by a backup with each tool, then
# a full restore of the last backup into an empty directory with each tool. Also a
# `tar | zstd -1` of the day-0 data set (the floor for a first backup), the stores'
# sizes after all backups against the source's, and envsnapd's peak RSS per operation.
#
#   bash benches/churn.sh                                      # SCALE=100: ~2.5 GB, 13 days
#   SCALE=5 CHURN_DAYS=2 BENCH_SETTLE=5 bash benches/churn.sh  # quick (~110 MB)
#   ENVSNAP_BIN=target/release bash benches/churn.sh           # prebuilt binaries, no build
#
# envsnap runs as an operator would run it: envsnapd started for each operation and
# stopped (SIGTERM) right after it (history.sh's restart mode, a reboot a day), driven
# by envsnapctl. Every timed command is timed until its output is durable (`sync -f`
# on the repository or restore directory, inside the timing). See benches/README.md.
set -euo pipefail

# ---------------------------------------------------------------- settings --
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=$REPO_ROOT/../shared/bench             # make-dataset.sh, mutate.sh, tree-manifest.sh
SCALE=${SCALE:-100}                           # percent of the data set's budgets
CHURN_DAYS=${CHURN_DAYS:-13}                  # days of churn after the first backup
FIRST_ROUNDS=${FIRST_ROUNDS:-3}               # first backups (and tar | zstd) per tool: medians
BENCH_DIR=${BENCH_DIR:-/tmp/envsnap-churn}    # pristine data set, run dir, results.md
BENCH_SETTLE=${BENCH_SETTLE:-40}              # seconds after a sync before each restore
BENCH_VERIFY=${BENCH_VERIFY:-1}               # compare restores with the source (untimed)
BENCH_KEEP=${BENCH_KEEP:-0}                   # keep the run dir (copies, stores, restores)
if [[ -z ${BENCH_TOOLS:-} ]]; then
  BENCH_TOOLS="envsnap restic"
  command -v rustic >/dev/null && BENCH_TOOLS+=" rustic"
fi
export RESTIC_PASSWORD=${RESTIC_PASSWORD:-bench}  # restic and rustic read it from here,
export RUSTIC_PASSWORD=$RESTIC_PASSWORD           # never from argv (visible in ps)

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
has_tool() { [[ " $BENCH_TOOLS " == *" $1 "* ]]; }

[[ $(id -u) == 0 ]] || die "run as root: the data set keeps owners, and mutate.sh runs PostgreSQL via runuser"
[[ $SCALE =~ ^[0-9]+$ && $SCALE -gt 0 ]] || die "SCALE must be a positive integer (percent), got '$SCALE'"
[[ $CHURN_DAYS =~ ^[0-9]+$ && $CHURN_DAYS -gt 0 ]] || die "CHURN_DAYS must be a positive integer"
[[ $FIRST_ROUNDS =~ ^[0-9]+$ && $FIRST_ROUNDS -gt 0 ]] || die "FIRST_ROUNDS must be a positive integer"
for t in $BENCH_TOOLS; do
  case $t in envsnap|restic|rustic) ;; *) die "unknown tool '$t' in BENCH_TOOLS (envsnap, restic, rustic)" ;; esac
  [[ $t == envsnap ]] || command -v "$t" >/dev/null || die "$t is not installed"
done
has_tool envsnap || die "BENCH_TOOLS must hold envsnap"
for t in jq python3 sqlite3 zstd tar b2sum; do command -v $t >/dev/null || die "$t is needed"; done
[[ -x /usr/bin/time ]] || die "/usr/bin/time is needed (apt-get install time)"
for s in make-dataset.sh mutate.sh tree-manifest.sh; do
  [[ -f $SHARED/$s ]] || die "$SHARED/$s is missing (the shared data set scripts)"
done

# shellcheck source=benches/bins.sh
source "$REPO_ROOT/benches/bins.sh"
release_bins

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
PRISTINE=$BENCH_DIR/dataset-s$SCALE   # built once per SCALE, never changed
RUN=$BENCH_DIR/run                    # everything of one run; wiped at the start
SRC=$RUN/src                          # the copy the tools back up and mutate.sh churns
STATE=$RUN/src.state                  # its PostgreSQL cluster (mutate.sh's pgbench)
ROWS=$BENCH_DIR/rows.tsv              # day, tool, wall s, peak RSS KiB, CPU s, job s, start-up s, repo bytes
PARTS=$BENCH_DIR/parts.tsv            # day, part, size, stored (envsnap's own figures)
RESULTS=$BENCH_DIR/results.md

# ---------------------------------------------------------------- data set --
# make-dataset.sh copies files of this machine, which change as packages and crates
# are installed: build the data set once, keep it untouched, copy it for each run (its
# README). The marker is written last, so a build that died is built again.
if [[ $(cat "$PRISTINE.ok" 2>/dev/null) != "scale=$SCALE" ]]; then
  log "building the data set at SCALE=$SCALE in $PRISTINE (make-dataset.sh)"
  rm -rf "$PRISTINE" "$PRISTINE.state" "$PRISTINE.ok"
  SCALE=$SCALE bash "$SHARED/make-dataset.sh" "$PRISTINE" "$PRISTINE.state" >"$BENCH_DIR/make-dataset.log" 2>&1 ||
    { tail -n 20 "$BENCH_DIR/make-dataset.log" >&2; die "make-dataset.sh failed (log: $BENCH_DIR/make-dataset.log)"; }
  echo "scale=$SCALE" >"$PRISTINE.ok"
else
  log "reusing the data set $PRISTINE (remove $PRISTINE.ok to rebuild it)"
fi

log "preparing $RUN: a copy of the data set and of its PostgreSQL cluster"
rm -rf "$RUN"
mkdir -p "$RUN"
chmod 755 "$RUN"   # the postgres user must reach the cluster's copy
cp -a --sparse=always "$PRISTINE" "$SRC"
cp -a --sparse=always "$PRISTINE.state" "$STATE"
: >"$ROWS"
: >"$PARTS"
: >"$BENCH_DIR/mutate.log"

# ------------------------------------------------------------- measurement --
now_ns() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
# CPU time of a process and of the children it waited for, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 + $16 + $17 }' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)

# timed DURABLE_PATH CMD...: runs CMD, then `sync -f DURABLE_PATH`, both inside the
# timing; sets WALL (s) and, from /usr/bin/time, RSS (KiB) and CPU (user + sys s).
timed() {
  local path=$1 t0 t1 e; shift
  t0=$(now_ns)
  if ! /usr/bin/time -f '%e %M %U %S' -o "$RUN/time.out" "$@" >"$RUN/last.out" 2>"$RUN/last.err"; then
    tail -n 20 "$RUN/last.out" "$RUN/last.err" >&2
    die "failed: $*"
  fi
  sync -f "$path"
  t1=$(now_ns)
  WALL=$(secs "$t0" "$t1")
  read -r e RSS u s <"$RUN/time.out"
  CPU=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
}

row() { # DAY TOOL WALL RSS CPU [JOB STARTUP REPO_BYTES]
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${6:-}" "${7:-}" "${8:-}" >>"$ROWS"
}

# --------------------------------------------------------------- envsnap --
# One environment `bench` as an operator would configure this data set: the files tree
# as mount `files`, the directory of the database dumps as mount `db` without the live
# SQLite file (and its journals), which is its own part, `database:app`, read through
# SQLite's backup API instead of copied while it may change. A second environment,
# `restored`, has the same parts under an empty directory: the full restore is
# `restore restored LAST --from bench`, envsnap's way of restoring into another place.
ENV_DIR=$RUN/envsnap
STORE=$ENV_DIR/store
RESTORE_ENVSNAP=$RUN/restore-envsnap
export ENVSNAP_SOCKET=$ENV_DIR/envsnapd.sock
mkdir -p "$ENV_DIR/state"
env_parts() { # ENV ROOT
  cat <<EOF
[environments.$1]
version = "1.0"
[environments.$1.mounts.files]
path = "$2/files"
[environments.$1.mounts.db]
path = "$2/db"
exclude = ["app.sqlite", "app.sqlite-*"]
[environments.$1.databases.app]
kind = "sqlite"
path = "$2/db/app.sqlite"
EOF
}
{
  cat <<EOF
[daemon]
host = "bench"
socket = "$ENVSNAP_SOCKET"
state_dir = "$ENV_DIR/state"

[store]
url = "file://$STORE"

EOF
  env_parts bench "$SRC"
  echo
  env_parts restored "$RESTORE_ENVSNAP"
} >"$ENV_DIR/envsnap.toml"
"$BIN/envsnapd" --config "$ENV_DIR/envsnap.toml" --check >/dev/null || die "envsnapd refuses the config"

DAEMON_PID=
start_daemon() { # sets DAEMON_PID and STARTUP (s): launch until `status` answers
  local t0 _
  t0=$(now_ns)
  NO_COLOR=1 "$BIN/envsnapd" --config "$ENV_DIR/envsnap.toml" >>"$ENV_DIR/envsnapd.log" 2>&1 &
  DAEMON_PID=$!
  for _ in $(seq 1500); do
    "$CTL" status >/dev/null 2>&1 && break
    kill -0 "$DAEMON_PID" 2>/dev/null || { tail -n 20 "$ENV_DIR/envsnapd.log" >&2; die "envsnapd died"; }
    sleep 0.02
  done
  "$CTL" status >/dev/null 2>&1 || die "envsnapd did not answer within 30 s"
  STARTUP=$(secs "$t0" "$(now_ns)")
}
stop_daemon() {
  [[ -n $DAEMON_PID ]] || return 0
  kill -TERM "$DAEMON_PID" 2>/dev/null || true
  wait "$DAEMON_PID" 2>/dev/null || true
  DAEMON_PID=
}
peak_rss() { awk '/^VmHWM/ { print $2 }' "/proc/$DAEMON_PID/status"; }

# envsnap_timed DURABLE_PATH CMD...: CMD (a client command) timed against a freshly started daemon; the
# daemon's peak RSS (VmHWM, which covers its start) and CPU replace the client's.
envsnap_timed() { # DURABLE_PATH CMD...
  local cpu0 cpu1
  start_daemon
  cpu0=$(cpu_ticks "$DAEMON_PID")
  timed "$@"
  cpu1=$(cpu_ticks "$DAEMON_PID")
  RSS=$(peak_rss)
  CPU=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')
}

backup_envsnap() { # DAY
  local day=$1 job started finished
  envsnap_timed "$STORE" "$CTL" --json backup create bench --name "day-$day" --wait
  stop_daemon   # at once: the prune that follows a backup is cancelled, as at a reboot
  job=$(jq -r '.job.id' "$RUN/last.out")
  started=$(jq -r '.job.started' "$RUN/last.out")
  finished=$(jq -r '.job.finished' "$RUN/last.out")
  [[ $job != null && $started != null && $finished != null ]] || die "no job in the backup's result: $(head -c 300 "$RUN/last.out")"
  # The job's own time, started -> finished (the client also waits for the queue).
  JOB=$(secs "$(date -d "$started" +%s%N)" "$(date -d "$finished" +%s%N)")
  jq -r --arg d "$day" '.backup.parts[] | [$d, .part, .size, .stored] | @tsv' "$RUN/last.out" >>"$PARTS"
  row "$day" envsnap "$WALL" "$RSS" "$CPU" "$JOB" "$STARTUP" "$(du -sb "$STORE" | cut -f1)"
}

restore_envsnap() { # DAY
  local day=$1 started finished
  mkdir "$RESTORE_ENVSNAP"   # empty: the restore creates files/ and db/ in it
  envsnap_timed "$RESTORE_ENVSNAP" "$CTL" --json restore restored "day-$day" --from bench \
    --yes --wait --no-safety-backup
  stop_daemon
  started=$(jq -r '.started' "$RUN/last.out")
  finished=$(jq -r '.finished' "$RUN/last.out")
  JOB=$(secs "$(date -d "$started" +%s%N)" "$(date -d "$finished" +%s%N)")
  row restore envsnap "$WALL" "$RSS" "$CPU" "$JOB" "$STARTUP"
}

# ---------------------------------------------------------- restic, rustic --
# Both back up the whole data set directory, from inside it, so that a restore puts
# files/ and db/ straight into the target. The cache stays from day to day, as on a
# host that runs them daily.
export RESTIC_REPOSITORY=$RUN/restic RESTIC_CACHE_DIR=$RUN/restic-cache RUSTIC_CACHE_DIR=$RUN/rustic-cache
RUSTIC_REPO=$RUN/rustic
# new_peer_repos: empty repositories (and caches) for the peers
new_peer_repos() {
  if has_tool restic; then rm -rf "$RESTIC_REPOSITORY" "$RESTIC_CACHE_DIR" && restic init >/dev/null; fi
  if has_tool rustic; then
    rm -rf "$RUSTIC_REPO" "$RUSTIC_CACHE_DIR"
    rustic -r "$RUSTIC_REPO" init >/dev/null 2>&1 || die "rustic init failed"
  fi
}
new_peer_repos

backup_peer() { # TOOL DAY
  local repo=$RESTIC_REPOSITORY
  [[ $1 == rustic ]] && repo=$RUSTIC_REPO
  case $1 in   # env -C: from inside the data set, so that paths in the snapshot are relative
    restic) timed "$repo" env -C "$SRC" restic backup --quiet --host bench . ;;
    rustic) timed "$repo" env -C "$SRC" rustic -r "$repo" backup --no-progress --host bench . ;;
  esac
  row "$2" "$1" "$WALL" "$RSS" "$CPU" "" "" "$(du -sb "$repo" | cut -f1)"
}

restore_peer() { # TOOL
  local dir=$RUN/restore-$1
  mkdir "$dir"
  case $1 in
    restic) timed "$dir" restic restore latest --target "$dir" ;;
    rustic) timed "$dir" rustic -r "$RUSTIC_REPO" restore --no-progress latest "$dir" ;;
  esac
  row restore "$1" "$WALL" "$RSS" "$CPU"
}

# ------------------------------------------------------------- the run --
# tools_of DAY: BENCH_TOOLS rotated by DAY, so that no tool always runs first (with a
# colder page cache) or last (after the others' write-back).
tools_of() {
  local -a t=($BENCH_TOOLS)
  local n=${#t[@]} i
  for ((i = 0; i < n; i++)); do printf '%s ' "${t[(i + $1) % n]}"; done
}

backup_day() { # DAY [ROTATION]
  local day=$1 tool
  for tool in $(tools_of "${2:-$day}"); do
    sync   # the previous tool's write-back is not this one's
    log "day $day: $tool backup"
    case $tool in
      envsnap) backup_envsnap "$day" ;;
      *) backup_peer "$tool" "$day" ;;
    esac
    log "day $day: $tool: $(tail -n 1 "$ROWS" | cut -f3) s"
  done
}

trap 'stop_daemon' EXIT

# fresh_stores: after a round of first backups, every tool starts from nothing again
# (the last round's stores are the ones the days of churn build on).
fresh_stores() {
  stop_daemon
  rm -rf "$STORE" "$ENV_DIR/state" && mkdir -p "$ENV_DIR/state"
  sed -i '/^0\t/d' "$PARTS"
  new_peer_repos
}

log "day 0: $FIRST_ROUNDS rounds of first backups ($BENCH_TOOLS, tar | zstd), page cache warmed"
find "$SRC" -type f -exec cat {} + >/dev/null
for round in $(seq "$FIRST_ROUNDS"); do
  ((round == 1)) || fresh_stores
  backup_day 0 "$round"
  # The floor for a first backup: the day-0 data set through tar and zstd -1 on every
  # core into one file, timed until that file is durable. tar reads the sparse file's
  # holes as zeros (no -S), as `tar -cf -` does.
  sync
  log "day 0: tar -cf - | zstd -1 -T0 (round $round)"
  timed "$RUN" bash -c 'set -o pipefail; tar -C "$1" -cf - src | zstd -q -1 -T0 >"$2"' _ "$RUN" "$RUN/day0.tar.zst"
  row 0 tar-zstd "$WALL" "$RSS" "$CPU"
  TAR_ZST_BYTES=$(stat -c %s "$RUN/day0.tar.zst")
  rm -f "$RUN/day0.tar.zst"
done
SOURCE0_APPARENT=$(du -sb --apparent-size "$SRC" | cut -f1)

for day in $(seq 1 "$CHURN_DAYS"); do
  log "day $day: mutate.sh (untimed)"
  bash "$SHARED/mutate.sh" "$SRC" "$day" "$STATE" >>"$BENCH_DIR/mutate.log" 2>&1 ||
    { tail -n 20 "$BENCH_DIR/mutate.log" >&2; die "mutate.sh failed on day $day"; }
  backup_day "$day"
done

# Full restores of the last backup, each into an empty directory, after a sync and a
# pause: this machine's disk writes back the previous restore long after sync returns.
# Nothing is deleted until the end, so no restore creates files among freshly freed
# inodes of another.
verify_failures=()   # content that differs: the run fails
verify_notes=()      # metadata that differs: reported
manifest() { # DIR OUT: tree-manifest.sh's lines, without envsnap's SQLite file (checked apart)
  bash "$SHARED/tree-manifest.sh" "$1" | awk -F'\t' '$1 != "db/app.sqlite" && index($1, "db/app.sqlite-") != 1' >"$2"
}
compare_trees() { # TOOL DIR: content (columns 1-4), then metadata (5-8), against the source
  local what="$1: the data set's files" n state="content equal"
  [[ -s $RUN/m.src ]] || manifest "$SRC" "$RUN/m.src"   # once for all restores
  manifest "$2" "$RUN/m.$1"
  if ! cmp -s <(cut -f1-4 "$RUN/m.src") <(cut -f1-4 "$RUN/m.$1"); then
    diff <(cut -f1-4 "$RUN/m.src") <(cut -f1-4 "$RUN/m.$1") | head -n 10 >&2 || true
    state="CONTENT DIFFERS"
    verify_failures+=("$what: content differs ($(diff <(cut -f1-4 "$RUN/m.src") <(cut -f1-4 "$RUN/m.$1") | grep -c '^>') entries)")
  elif ! cmp -s "$RUN/m.src" "$RUN/m.$1"; then
    # Name the entries and the columns that differ (mode, owner, mtime, link count).
    n=$(diff "$RUN/m.src" "$RUN/m.$1" | grep -c '^>' || true)
    verify_notes+=("$what: content equal; metadata differs for $n entries: $(LC_ALL=C join -t $'\t' "$RUN/m.src" "$RUN/m.$1" |
      awk -F'\t' -v OFS=' ' '{ d = ""; split("mode owner mtime nlink", c, " ")
        for (i = 5; i <= 8; i++) if ($i != $(i + 7)) d = d c[i - 4] " " $i " -> " $(i + 7) ", "
        if (d != "") printf "%s%s (%s)", (k++ ? "; " : ""), $1, substr(d, 1, length(d) - 2) }' | head -c 600)")
  fi
  log "verified: $what ($(wc -l <"$RUN/m.src") entries): $state"
}
sqlite_figures() { # DB: integrity, row counts, and a hash of the whole content
  printf '%s %s %s %s\n' "$(sqlite3 "$1" 'PRAGMA integrity_check')" \
    "$(sqlite3 "$1" 'SELECT count(*) FROM events')" "$(sqlite3 "$1" 'SELECT count(*) FROM customers')" \
    "$(sqlite3 "$1" .dump | b2sum | cut -c1-32)"
}
verify_restore() { # TOOL
  [[ $BENCH_VERIFY == 1 ]] || return 0
  local dir=$RUN/restore-$1 want got
  compare_trees "$1" "$dir"
  # envsnap's SQLite part is a consistent copy made through SQLite's backup API, not the
  # file's bytes: compare what it holds. The peers' copy of the file is compared here too.
  want=$(sqlite_figures "$SRC/db/app.sqlite")
  got=$(sqlite_figures "$dir/db/app.sqlite")
  if [[ $got != "$want" ]]; then
    verify_failures+=("$1: db/app.sqlite: source '$want', restored '$got'")
  else
    log "verified: $1: db/app.sqlite (integrity ok, $(cut -d' ' -f2 <<<"$got") events, same .dump)"
  fi
  want=$(stat -c '%a %U:%G' "$SRC/db/app.sqlite")
  got=$(stat -c '%a %U:%G' "$dir/db/app.sqlite")
  [[ $got == "$want" ]] || verify_notes+=("$1: db/app.sqlite: mode and owner $want in the source, $got restored")
}

for tool in $(tools_of $((CHURN_DAYS + 1))); do
  sync
  log "restore: $tool, after a pause of $BENCH_SETTLE s"
  sleep "$BENCH_SETTLE"
  case $tool in
    envsnap) restore_envsnap "$CHURN_DAYS" ;;
    *) restore_peer "$tool" ;;
  esac
  log "restore: $tool: $WALL s"
  verify_restore "$tool"
done

# ------------------------------------------------------------ store sizes --
SOURCE_APPARENT=$(du -sb --apparent-size "$SRC" | cut -f1)
# Bytes of data, holes not counted (the sparse file's few written blocks only).
SOURCE_DATA=$(find "$SRC" -type f -printf '%s %b\n' | awk '{ a = $1; b = $2 * 512; s += (b < a ? b : a) } END { printf "%d\n", s }')
SPARSE=$(find "$SRC/files/edge-cases" -maxdepth 1 -name 'sparse-*' -printf '%s %b\n' | awk '{ printf "%d %d", $1, $2 * 512 }')
{
  printf 'envsnap\t%s\n' "$(du -sb "$STORE" | cut -f1)"
  # The store's objects by kind (docs/format.md: HOST/packs, index, manifests, locks;
  # the rest: the repository config, the host's status, anything else).
  find "$STORE" -type f -printf '%P\t%s\n' | awk -F'\t' '
    { n = split($1, p, "/"); k = (n >= 2 && p[2] ~ /^(packs|index|manifests|locks)$/) ? p[2] : "other"
      s[k] += $2; c[k]++ }
    END { for (k in s) printf "envsnap:%s\t%d\t%d\n", k, s[k], c[k] }'
  for t in restic rustic; do
    has_tool $t || continue
    [[ $t == restic ]] && printf 'restic\t%s\n' "$(du -sb "$RESTIC_REPOSITORY" | cut -f1)"
    [[ $t == rustic ]] && printf 'rustic\t%s\n' "$(du -sb "$RUSTIC_REPO" | cut -f1)"
  done
} >"$BENCH_DIR/stores.tsv"

# ------------------------------------------------------------------ report --
render() {
  echo "# Issue 16: the $CHURN_DAYS-day churn scenario, envsnap vs $(tr ' ' '\n' <<<"$BENCH_TOOLS" | grep -v envsnap | paste -sd/)"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), host: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- data: make-dataset.sh at SCALE=$SCALE, $CHURN_DAYS days of mutate.sh; $(grep -o 'fingerprint.*' "$PRISTINE.state/composition.txt" 2>/dev/null || echo 'fingerprint -')"
  echo "- envsnap $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO_ROOT" diff --quiet 2>/dev/null || echo ' (with local changes)'), binaries $BIN;" \
       "$(restic version 2>/dev/null | cut -d' ' -f1-2)$(has_tool rustic && echo ", $(rustic --version 2>/dev/null)")"
  echo "- envsnap: mounts files/ and db/ (without app.sqlite), SQLite part db/app.sqlite; a fresh envsnapd per operation;" \
       "restic: the whole data set directory. Times until durable (sync -f). Settle before restores: $BENCH_SETTLE s"
  echo
  python3 - "$ROWS" "$PARTS" "$BENCH_DIR/stores.tsv" "$CHURN_DAYS" "$SOURCE0_APPARENT" "$SOURCE_APPARENT" \
    "$SOURCE_DATA" "$TAR_ZST_BYTES" "$SPARSE" "$BENCH_TOOLS" <<'PY'
import sys
rows_f, parts_f, stores_f, days, src0, src, data, tarzst, sparse, tools = sys.argv[1:11]
days, src0, src, data, tarzst = int(days), int(src0), int(src), int(data), int(tarzst)
sparse_app, sparse_alloc = (int(x) for x in sparse.split()) if sparse.strip() else (0, 0)
peers = [t for t in tools.split() if t != "envsnap"]
R = {}
FIRST = {}  # tool -> its first backups, one per round (R keeps the last: the stores built on)
for line in open(rows_f):
    day, tool, wall, rss, cpu, job, startup, repo = line.rstrip("\n").split("\t")
    f = lambda v: float(v) if v else None
    R[(day, tool)] = dict(wall=f(wall), rss=f(rss), cpu=f(cpu), job=f(job), startup=f(startup), repo=f(repo))
    if day == "0":
        FIRST.setdefault(tool, []).append(R[(day, tool)])
# Bytes a backup added to its repository (du -sb after it, less after the one before).
def added(day, tool):
    a, b = R.get((str(day), tool)), R.get((str(day - 1), tool))
    return (a["repo"] - b["repo"]) / 1e6 if a and b and a["repo"] is not None and b["repo"] is not None else None
mib = lambda kib: f"{kib / 1024:.0f}" if kib else "-"
def ratio(a, b): return a / b if a is not None and b else None
def fmt(x, d=2): return "-" if x is None else f"{x:.{d}f}"
def met(x, limit): return "-" if x is None else ("met" if x <= limit else "**MISSED**")
# envsnap's figure against the peers: the client's time plus the daemon's start-up (a
# fresh envsnapd per backup), against the peer's whole process.
def es_total(r): return r["wall"] + (r["startup"] or 0)

def median(xs):
    xs = sorted(x for x in xs if x is not None)
    n = len(xs)
    return None if n == 0 else (xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2)
def first_wall(t, r): return es_total(r) if t == "envsnap" else r["wall"]
rounds = len(FIRST.get("envsnap", []))
print(f"## First backup (day 0), medians of {rounds} round{'s' if rounds > 1 else ''}\n")
print("| tool | wall s (range) | CPU s | peak RSS MiB | x tar\\|zstd | x restic |")
print("|---|---:|---:|---:|---:|---:|")
M = {t: dict(wall=median(first_wall(t, r) for r in rs), cpu=median(r["cpu"] for r in rs),
             rss=median(r["rss"] for r in rs), job=median(r["job"] for r in rs),
             lo=min(first_wall(t, r) for r in rs), hi=max(first_wall(t, r) for r in rs))
     for t, rs in FIRST.items()}
tz, base_r = M.get("tar-zstd"), M.get("restic")
for t in tools.split() + ["tar-zstd"]:
    m = M.get(t)
    if not m: continue
    name = {"envsnap": "envsnap (start-up + client; job %s s)" % fmt(m["job"]), "tar-zstd": "tar -cf - \\| zstd -1 -T0"}.get(t, t)
    print(f"| {name} | {m['wall']:.2f} ({m['lo']:.2f}-{m['hi']:.2f}) | {fmt(m['cpu'])} | {mib(m['rss'])} | {fmt(ratio(m['wall'], tz['wall']) if tz else None)} | {fmt(ratio(m['wall'], base_r['wall']) if base_r else None)} |")
x_tar = ratio(M["envsnap"]["wall"], tz["wall"]) if tz else None
x_res = ratio(M["envsnap"]["wall"], base_r["wall"]) if base_r else None
per_round = lambda peer: ", ".join(fmt(ratio(first_wall("envsnap", e), first_wall(peer, p)))
                                   for e, p in zip(FIRST["envsnap"], FIRST.get(peer, [])))
print(f"\n- envsnap / tar|zstd: {fmt(x_tar)} (target <= 1.3): {met(x_tar, 1.3)}; by round: {per_round('tar-zstd')}")
if base_r: print(f"- envsnap / restic: {fmt(x_res)} (target <= 0.45): {met(x_res, 0.45)}; by round: {per_round('restic')}")
print(f"- tar.zst of the day-0 data set: {tarzst / 1e6:.1f} MB\n")

print("## Daily backups\n")
# Issue 16's targets for a daily backup: 0.35x restic's time, 0.5x rustic's.
DAILY = {"restic": 0.35, "rustic": 0.5}
head = "| day | envsnap job s | envsnap client s | envsnap start-up s | envsnapd CPU s | envsnapd peak RSS MiB | envsnap +MB |"
sep = "|---:|---:|---:|---:|---:|---:|---:|"
for p in peers:
    head += f" {p} s | {p} CPU s | {p} peak RSS MiB | {p} +MB | envsnap / {p} | target | met? |"
    sep += "---:|---:|---:|---:|---:|---:|---|"
print(head); print(sep)
sums = {p: [0.0, 0.0] for p in peers}
for d in range(1, days + 1):
    e = R[(str(d), "envsnap")]
    line = f"| {d} | {fmt(e['job'])} | {fmt(e['wall'])} | {fmt(e['startup'], 3)} | {fmt(e['cpu'])} | {mib(e['rss'])} | {fmt(added(d, 'envsnap'))} |"
    for p in peers:
        r = R.get((str(d), p))
        x = ratio(es_total(e), r["wall"]) if r else None
        if r: sums[p][0] += es_total(e); sums[p][1] += r["wall"]
        line += f" {fmt(r['wall'] if r else None)} | {fmt(r['cpu'] if r else None)} | {mib(r['rss'] if r else None)} | {fmt(added(d, p))} | {fmt(x)} | {DAILY[p]} | {met(x, DAILY[p])} |"
    print(line)
for p in peers:
    x = ratio(*sums[p])
    print(f"\n- days 1-{days} summed: envsnap {sums[p][0]:.2f} s, {p} {sums[p][1]:.2f} s: {fmt(x)} (target <= {DAILY[p]}): {met(x, DAILY[p])}")
e1, en = R[("1", "envsnap")], R[(str(days), "envsnap")]
for what in ("job", "wall"):
    x = ratio(en[what], e1[what])
    ok = "-" if x is None else ("met" if abs(x - 1) <= 0.10 else ("met (faster)" if x < 1 else "**MISSED**"))
    print(f"- envsnap day {days} / day 1, {'job' if what == 'job' else 'client'} time: {en[what]:.2f} / {e1[what]:.2f} s = {fmt(x)} (target: within 10%): {ok}")
# Single days are noisy on a shared machine: the first three days against the last three.
if days >= 6:
    import statistics
    for what in ("job", "wall", "cpu"):
        a = statistics.median(R[(str(d), "envsnap")][what] for d in (1, 2, 3))
        b = statistics.median(R[(str(d), "envsnap")][what] for d in (days - 2, days - 1, days))
        name = {"job": "envsnap job time", "wall": "envsnap client time", "cpu": "envsnapd CPU"}[what]
        print(f"- {name}, median of days {days - 2}-{days} / median of days 1-3: {b:.2f} / {a:.2f} s = {fmt(ratio(b, a))}")
print()

print("## Full restore of the last backup into an empty directory\n")
print("| tool | wall s | CPU s | peak RSS MiB | envsnap / tool | target | met? |")
print("|---|---:|---:|---:|---:|---:|---|")
er = R[("restore", "envsnap")]
print(f"| envsnap (start-up + client; job {fmt(er['job'])} s) | {es_total(er):.2f} | {fmt(er['cpu'])} | {mib(er['rss'])} | - | - | - |")
for p in peers:
    r = R.get(("restore", p))
    if not r: continue
    x = ratio(es_total(er), r["wall"])
    # Issue 16: at most 0.7x restic's time and rustic's.
    print(f"| {p} | {r['wall']:.2f} | {fmt(r['cpu'])} | {mib(r['rss'])} | {fmt(x)} | 0.7 | {met(x, 0.7)} |")
print()

print(f"## Store size after {days + 1} backups\n")
S = {}
for line in open(stores_f):
    k, *v = line.rstrip("\n").split("\t"); S[k] = [int(x) for x in v]
print(f"Source on the last day: {src / 1e6:.1f} MB apparent (`du -sb --apparent-size`; day 0: {src0 / 1e6:.1f} MB), "
      f"counting the sparse file at its apparent size, {sparse_app / 1e6:.1f} MB, of which {sparse_alloc / 1e6:.2f} MB "
      f"are allocated; {data / 1e6:.1f} MB of data with holes not counted.\n")
print("| repository | bytes | MB | x source (apparent) | x source (data, no holes) | target | met? |")
print("|---|---:|---:|---:|---:|---:|---|")
for k in ["envsnap"] + peers:
    if k not in S: continue
    b = S[k][0]
    x = b / src
    print(f"| {k} (`du -sb`) | {b} | {b / 1e6:.1f} | {x:.3f} | {b / data:.3f} | {'0.45' if k == 'envsnap' else '-'} | {met(x, 0.45) if k == 'envsnap' else '-'} |")
print("\nenvsnap's store by object kind (files listed in the store directory):\n")
print("| kind | objects | bytes | MB | share |")
print("|---|---:|---:|---:|---:|")
tot = sum(v[0] for k, v in S.items() if k.startswith("envsnap:"))
for k in ("packs", "index", "manifests", "locks", "other"):
    v = S.get("envsnap:" + k)
    if v: print(f"| {k} | {v[1]} | {v[0]} | {v[0] / 1e6:.2f} | {100 * v[0] / tot:.1f}% |")
print("\nWhere the bytes go, by envsnap's own figures (`backup create --json`: each part's size, and bytes newly stored, compressed):\n")
P = {}
for line in open(parts_f):
    d, part, size, stored = line.rstrip("\n").split("\t")
    P.setdefault(part, {})[int(d)] = (int(size), int(stored))
print(f"| part | size day 0 MB | size day {days} MB | stored day 0 MB | stored days 1-{days} MB | stored per day MB (mean) | stored total MB |")
print("|---|---:|---:|---:|---:|---:|---:|")
for part, v in P.items():
    later = sum(v[d][1] for d in v if d > 0)
    print(f"| {part} | {v[0][0] / 1e6:.1f} | {v[days][0] / 1e6:.1f} | {v[0][1] / 1e6:.2f} | {later / 1e6:.2f} | {later / days / 1e6:.2f} | {(v[0][1] + later) / 1e6:.2f} |")
PY
  [[ $BENCH_VERIFY == 1 ]] || return 0
  echo
  echo "Restores checked (untimed) against the source: tree-manifest.sh of the whole restored" \
       "directory (content: path, type, size, hash; metadata: mode, owner, mtime, link count), and" \
       "db/app.sqlite by integrity_check, row counts and a hash of its .dump."
  if ((${#verify_failures[@]})); then
    echo
    echo "**Restore verification failed:**"
    printf -- '- %s\n' "${verify_failures[@]}"
  else
    echo "Content equal for every tool."
  fi
  if ((${#verify_notes[@]})); then
    echo
    echo "Metadata differences:"
    printf -- '- %s\n' "${verify_notes[@]}"
  fi
}

render | tee "$RESULTS"
cp "$ENV_DIR/envsnapd.log" "$BENCH_DIR/envsnapd.log"
log "results: $RESULTS (rows: $ROWS, parts: $PARTS; logs: $BENCH_DIR/mutate.log, $BENCH_DIR/envsnapd.log)"
if [[ $BENCH_KEEP == 1 ]]; then
  log "run dir kept: $RUN"
else
  rm -rf "$RUN"
fi
((${#verify_failures[@]} == 0)) || die "a restore differs from its source (see results)"
