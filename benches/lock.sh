#!/usr/bin/env bash
# What S3 Object Lock (`store.lock`, issue 15) costs: the same backups and prunes of
# the same data into two buckets of one moto server, one with Object Lock (envsnapd
# with `lock = { mode = "governance", extra = ... }`) and one plain (no `lock`),
# alternated so that machine noise hits both. For each timed operation: wall time,
# envsnapd's and moto's CPU time, and the S3 requests by kind, counted from moto's
# access log. See benches/README.md.
#
#   bash benches/lock.sh                                  # 2 rounds, 6 daily backups
#   LOCK_ROUNDS=1 LOCK_DAYS=3 BENCH_GIB=0.1 bash benches/lock.sh   # quick
#   ENVSNAP_BIN=/work/tgt-bench/release bash benches/lock.sh       # prebuilt binaries
#
# Each round has two phases, each with a fresh copy of the data and a fresh daemon
# per bucket:
#   short: retention LOCK_SHORT_RETENTION (120 s), extra LOCK_SHORT_EXTRA (10 s): a first
#          backup, then, once every shared object's lock is due for lengthening
#          (half the retention after the first backup started), one backup after a
#          day of churn: the lengthening day. Then, once the first backup has expired
#          and its manifest's lock has passed, `prune --dry-run` and `prune`, which
#          remove it from both buckets.
#   daily: retention 14d, extra 1d: a first backup, then LOCK_DAYS daily backups,
#          each after a day of churn (nothing is due for lengthening: the steady
#          cost of locked writes); then `backup delete` of d1 (refused under lock),
#          `prune --dry-run` and `prune`.
set -euo pipefail

# ---------------------------------------------------------------- settings --
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/envsnap-lock}
BENCH_GIB=${BENCH_GIB:-0.25}                    # size of the copied real files
BENCH_SQLITE_MB=${BENCH_SQLITE_MB:-50}          # size of the SQLite file
BENCH_SPARSE_GIB=${BENCH_SPARSE_GIB:-1}         # apparent size of the sparse file
BENCH_REBUILD=${BENCH_REBUILD:-0}
LOCK_ROUNDS=${LOCK_ROUNDS:-2}                   # the whole run, this many times
LOCK_DAYS=${LOCK_DAYS:-6}                       # daily backups in the daily phase
LOCK_SHORT_RETENTION=${LOCK_SHORT_RETENTION:-120}   # seconds, the short phase's retention
LOCK_SHORT_EXTRA=${LOCK_SHORT_EXTRA:-10}        # seconds, the short phase's lock.extra
LOCK_KEEP=${LOCK_KEEP:-0}                       # keep the run dir (logs, configs)
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
DATASET=$BENCH_DIR/dataset
RUN=$BENCH_DIR/run
SRC=$RUN/src
ROWS=$BENCH_DIR/rows.tsv    # round, phase, scenario, store, wall ms, daemon CPU ms, moto CPU ms, requests, note
RESULTS=$BENCH_DIR/results.md
REQS=$BENCH_DIR/requests  # each timed operation's lines of moto's log, for a closer look

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
for tool in python3 sqlite3 jq; do command -v $tool >/dev/null || die "$tool is needed"; done
MOTO=$(command -v moto_server) || die "moto_server is missing: pip install 'moto[server]'"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # PORT WHAT
  local _
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done
  die "$2 did not listen on port $1"
}
now_ms() { date +%s%3N; }
cpu_ms() { awk '{ print ($14 + $15) * 10 }' "/proc/$1/stat"; }   # utime + stime, 100 Hz

# shellcheck source=benches/bins.sh
source "$REPO_ROOT/benches/bins.sh"
release_bins

# shellcheck source=benches/dataset.sh
source "$REPO_ROOT/benches/dataset.sh"
ensure_dataset

# One day of churn (dataset.sh's churn_day), then the page cache warmed for both
# backups.
churn() {
  churn_day "$SRC" "$1"
  find "$SRC" -type f -exec cat {} + >/dev/null
}

fresh_copy() {
  rm -rf "$SRC"
  cp -a --sparse=always "$DATASET" "$SRC"
  find "$SRC" -type f -exec cat {} + >/dev/null
}

# ------------------------------------------------------------ server, daemons --
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ $LOCK_KEEP == 1 ]] || rm -rf "$RUN"
}
trap cleanup EXIT

# start_moto: a fresh moto on a free port with buckets `locked` (Object Lock) and
# `plain`; its access log (one line a request) in $MOTO_LOG.
start_moto() {
  MOTO_PORT=$(free_port)
  MOTO_LOG=$RUN/moto-$1.log
  PYTHONUNBUFFERED=1 "$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" >/dev/null 2>"$MOTO_LOG" &
  MOTO_PID=$!
  pids+=("$MOTO_PID")
  wait_port "$MOTO_PORT" moto_server
  curl -sf -X PUT -H 'x-amz-bucket-object-lock-enabled: true' "http://127.0.0.1:$MOTO_PORT/locked" >/dev/null
  curl -sf -X PUT "http://127.0.0.1:$MOTO_PORT/plain" >/dev/null
  export AWS_ENDPOINT=http://127.0.0.1:$MOTO_PORT AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
    AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret \
    AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# start_daemon STORE PREFIX RETENTION [EXTRA]: envsnapd on s3://STORE/PREFIX (with a
# governance lock of EXTRA when STORE is `locked`), environment `bench` (one mount:
# $SRC) kept RETENTION. Sets DPID[STORE].
declare -A DPID
start_daemon() {
  local store=$1 prefix=$2 retention=$3 extra=${4:-} dir=$RUN/$1-$2 lock=""
  [[ $store == locked ]] && lock="lock = { mode = \"governance\", extra = \"$extra\" }"
  rm -rf "$dir"
  mkdir -p "$dir"
  cat >"$dir/envsnap.toml" <<TOML
[daemon]
host = "bench"
socket = "$dir/envsnapd.sock"
state_dir = "$dir/state"
[store]
url = "s3://$store/$prefix"
$lock
[environments.bench]
version = "1.0"
retention = "$retention"
[environments.bench.mounts.data]
path = "$SRC"
TOML
  "$BIN/envsnapd" --config "$dir/envsnap.toml" >"$dir/envsnapd.log" 2>&1 &
  DPID[$store]=$!
  pids+=("${DPID[$store]}")
  SOCK[$store]=$dir/envsnapd.sock
  local _
  for _ in $(seq 300); do ctl "$store" status >/dev/null 2>&1 && return; sleep 0.1; done
  tail -n 20 "$dir/envsnapd.log" >&2
  die "envsnapd ($store) did not start"
}
declare -A SOCK
ctl() { local store=$1; shift; "$BIN/envsnapctl" --socket "${SOCK[$store]}" "$@"; }

# requests BUCKET FROM TO: the requests to BUCKET between byte offsets FROM and TO of
# moto's log, by kind ("PUT 12, PUT?retention 3, HEAD 1"), failed ones apart.
requests() {
  tail -c +"$(($2 + 1))" "$MOTO_LOG" | head -c "$(($3 - $2))" | awk -v bucket="$1" '
    match($0, /"[A-Z]+ [^ ]+ HTTP\/[0-9.]+" [0-9]+/) {
      split(substr($0, RSTART + 1, RLENGTH - 1), f, " ")
      method = f[1]; target = f[2]; status = f[4]
      path = target; query = ""
      q = index(target, "?"); if (q) { path = substr(target, 1, q - 1); query = substr(target, q + 1) }
      if (path != "/" bucket && index(path, "/" bucket "/") != 1) next
      if (method == "PUT") kind = query ~ /retention/ ? "PUT?retention" : query ~ /legal-hold/ ? "PUT?legal-hold" \
                                : query ~ /uploadId/ ? "PUT part" : "PUT"
      else if (method == "GET") kind = query ~ /versions/ ? "GET?versions" : query ~ /object-lock/ ? "GET?object-lock" \
                                : (path == "/" bucket) ? "LIST" : "GET"
      else kind = method
      if (status >= 400) kind = kind " " status
      if (!(kind in n)) order[++k] = kind
      n[kind]++
    }
    END { for (i = 1; i <= k; i++) printf "%s%s %d", (i > 1 ? ", " : ""), order[i], n[order[i]]; if (!k) printf "none" }'
}

# measure PHASE SCENARIO STORE [--may-fail] CMD...: one row: wall time, envsnapd's and
# moto's CPU time, the requests to the store's bucket. The command's output is kept
# in $RUN/last.out (a prune's summary goes into the row's note).
measure() {
  local phase=$1 scenario=$2 store=$3 may_fail=0 t0 t1 c0 c1 m0 m1 o0 o1 rc=0 note=""; shift 3
  [[ $1 == --may-fail ]] && { may_fail=1; shift; }
  log "round $ROUND: $phase: $scenario: $store"
  sync
  o0=$(stat -c %s "$MOTO_LOG"); c0=$(cpu_ms "${DPID[$store]}"); m0=$(cpu_ms "$MOTO_PID"); t0=$(now_ms)
  ctl "$store" "$@" >"$RUN/last.out" 2>"$RUN/last.err" || rc=$?
  t1=$(now_ms); c1=$(cpu_ms "${DPID[$store]}"); m1=$(cpu_ms "$MOTO_PID"); o1=$(stat -c %s "$MOTO_LOG")
  if ((rc != 0)); then
    ((may_fail)) || { cat "$RUN/last.out" "$RUN/last.err" >&2; die "$store: $scenario failed"; }
    note="refused: $(head -c 160 "$RUN/last.err" | tr '\n\t|' '   ')"
  elif [[ $* == *prune* ]]; then
    note=$(jq -r '[ "pruned \(.pruned | length)",
                    (if .store then "marked \(.store.marked), packs_deleted \(.store.packs_deleted), waiting_for_lock \(.store.waiting_for_lock // 0)" else empty end),
                    ([.plans[][]? | select((.reason // "") | test("locked")) | .reason] | if length > 0 then "kept: \(.[0])" else empty end)
                  ] | join("; ")' "$RUN/last.out" 2>/dev/null || echo "")
  fi
  tail -c +"$((o0 + 1))" "$MOTO_LOG" | head -c "$((o1 - o0))" | grep -F "/$store" \
    >"$REQS/$ROUND-$phase-${scenario//[^a-z0-9-]/_}-$store.log" || true
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$ROUND" "$phase" "$scenario" "$store" "$((t1 - t0))" \
    "$((c1 - c0))" "$((m1 - m0))" "$(requests "$store" "$o0" "$o1")" "$note" >>"$ROWS"
}

# pair PHASE SCENARIO FIRST CMD...: CMD on both daemons, FIRST (locked or plain) first;
# after a backup, the prune the daemon starts after it is waited out (untimed).
pair() {
  local phase=$1 scenario=$2 first=$3 store; shift 3
  local order=(locked plain)
  [[ $first == plain ]] && order=(plain locked)
  for store in "${order[@]}"; do
    measure "$phase" "$scenario" "$store" "$@"
    if [[ $* == *"backup create"* ]]; then ctl "$store" --json prune >/dev/null; fi
  done
}
# Which bucket goes first: alternates with N (a day), shifted each round.
first_of() { (( ($1 + ROUND) % 2 == 0 )) && echo locked || echo plain; }

sleep_until() { # EPOCH_MS WHY
  local left=$(( ($1 - $(now_ms)) / 1000 + 1 ))
  ((left > 0)) || return 0
  log "waiting ${left}s: $2"
  sleep "$left"
}

# --------------------------------------------------------------- the phases --
short_phase() {
  local ret=$LOCK_SHORT_RETENTION extra=$LOCK_SHORT_EXTRA t_locked t_plain
  fresh_copy
  start_daemon locked s "${ret}s" "${extra}s"
  start_daemon plain s "${ret}s"
  # The locked bucket first: the waits below count from the end of its first backup.
  measure short "first backup" locked --json backup create bench --name first --wait
  t_locked=$(now_ms)
  ctl locked --json prune >/dev/null
  measure short "first backup" plain --json backup create bench --name first --wait
  t_plain=$(now_ms)
  ctl plain --json prune >/dev/null
  churn 1
  # Shared data is locked until expiry + extra + half the lifetime: every object of
  # the first backup is due once half the retention has passed since it completed.
  sleep_until $((t_locked + ret * 1000 / 2 + 5000)) "until the first backup's shared data is due for lengthening"
  pair short "lengthening day" "$(first_of 1)" --json backup create bench --name d1 --wait
  # Both first backups expired, the locked one's manifest unlocked (expiry + extra).
  sleep_until $((t_plain + (ret + extra) * 1000 + 5000)) "until the first backup has expired and its lock passed"
  pair short "prune --dry-run" "$(first_of 2)" --json prune --dry-run
  pair short "prune (first expired)" "$(first_of 3)" --json prune
  stop "${DPID[locked]}"; stop "${DPID[plain]}"
}

daily_phase() {
  local day
  fresh_copy
  start_daemon locked h 14d 1d
  start_daemon plain h 14d
  pair daily "first backup" "$(first_of 0)" --json backup create bench --name d0 --wait
  for day in $(seq "$LOCK_DAYS"); do
    churn $((100 + day))
    pair daily "daily backup d$day" "$(first_of "$day")" --json backup create bench --name "d$day" --wait
  done
  pair daily "backup delete d1" "$(first_of 1)" --may-fail --json backup delete bench d1 --yes
  pair daily "prune --dry-run" "$(first_of 2)" --json prune --dry-run
  pair daily "prune" "$(first_of 3)" --json prune
  stop "${DPID[locked]}"; stop "${DPID[plain]}"
}

: >"$ROWS"
rm -rf "$REQS"
mkdir -p "$REQS"
for ROUND in $(seq "$LOCK_ROUNDS"); do
  rm -rf "$RUN"
  mkdir -p "$RUN"
  start_moto "$ROUND"
  short_phase
  daily_phase
  stop "$MOTO_PID"
done

# ------------------------------------------------------------------ report --
render() {
  echo "# What Object Lock costs (moto $(python3 -c 'import moto; print(moto.__version__)' 2>/dev/null || echo '?') on loopback)"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), host: $(nproc) cores; repository HEAD (the binaries may differ: ENVSNAP_BIN) $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "- data: $(data_bytes "$DATASET") bytes of real data ($(find "$DATASET" -type f | wc -l) files; BENCH_GIB=$BENCH_GIB," \
       "SQLite ${BENCH_SQLITE_MB} MB); churn per day: ~1% of files rewritten in part, 5 deleted, 5 added, 0.5% new rows, 1% rows updated"
  echo "- locked: governance, extra 1d (daily) / ${LOCK_SHORT_EXTRA}s (short, retention ${LOCK_SHORT_RETENTION}s); plain: the same without lock"
  echo "- s: wall time of envsnapctl; CPU: envsnapd's user+sys during it (moto's in parentheses); requests: to the bucket, from moto's log"
  python3 - "$ROWS" <<'PY'
import csv, statistics, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter="\t"))
by = {}
for r in rows:
    rnd, phase, scen, store, wall, cpu, moto, reqs, note = r
    by.setdefault((rnd, phase, scen), {})[store] = (int(wall), int(cpu), int(moto), reqs, note)
rounds = sorted({r[0] for r in rows}, key=int)
def line(scen, L, P):
    ratio = L[0] / P[0] if P[0] else float("nan")
    note = "; ".join(x for x in (L[4] and "locked: " + L[4], P[4] and "plain: " + P[4]) if x)
    return (f"| {scen} | {L[0]/1000:.2f} | {P[0]/1000:.2f} | {ratio:.2f} | {L[1]/1000:.2f} ({L[2]/1000:.1f}) "
            f"| {P[1]/1000:.2f} ({P[2]/1000:.1f}) | {L[3]} | {P[3]} | {note} |")
summary = []
for rnd in rounds:
    for phase in ("short", "daily"):
        print(f"\n## Round {rnd}, {phase} phase\n")
        print("| scenario | locked s | plain s | ratio | locked CPU s (moto) | plain CPU s (moto) | locked requests | plain requests | note |")
        print("|---|---:|---:|---:|---:|---:|---|---|---|")
        days = []
        for (r, ph, scen), v in by.items():
            if r != rnd or ph != phase or "locked" not in v or "plain" not in v:
                continue
            print(line(scen, v["locked"], v["plain"]))
            if scen.startswith("daily backup"):
                days.append(v)
        if days:
            L = statistics.median(d["locked"][0] for d in days); P = statistics.median(d["plain"][0] for d in days)
            Lc = statistics.median(d["locked"][1] for d in days); Pc = statistics.median(d["plain"][1] for d in days)
            sL = sum(d["locked"][0] for d in days); sP = sum(d["plain"][0] for d in days)
            print(f"| **daily backups, median of {len(days)}** | {L/1000:.2f} | {P/1000:.2f} | **{L/P:.2f}** "
                  f"| {Lc/1000:.2f} | {Pc/1000:.2f} | | | sum ratio {sL/sP:.2f} |")
            summary.append(f"- round {rnd}: daily backup, locked/plain: {L/P:.2f} by the medians, {sL/sP:.2f} by the sums "
                           f"(target < 1.10: {'met' if L/P < 1.10 else 'MISSED'}); envsnapd CPU {Lc/Pc:.2f}")
print("\n## Daily backup: the target of issue 15\n")
print("\n".join(summary))
PY
}
render | tee "$RESULTS"
log "results written to $RESULTS (rows: $ROWS)"
