#!/usr/bin/env bash
# Cost as history grows (issue 16): a first backup (day 0), then N daily backups of
# one environment with a small churn before each, in two modes, and whether the last
# day costs what the first did.
#
#   bash benches/history.sh                       # 30 backups per mode, 0.3 GiB of files
#   HIST_BACKUPS=10 BENCH_GIB=0.1 bash benches/history.sh    # quick
#   HIST_MODES=restart ENVSNAP_BIN=target/release bash benches/history.sh
#   HIST_KEEP_LAST=10 bash benches/history.sh     # retention prunes from day 11 on
#   HIST_CHURN=hour HIST_BACKUPS=300 HIST_MODES=daemon bash benches/history.sh
#                                                 # issue 16: 300 hourly backups, data size flat
#
# Modes: `restart` starts envsnapd for each backup and stops it (SIGTERM) as soon as
# the backup completed, so the prune that follows each backup is cancelled, as after
# a nightly reboot; `daemon` keeps one envsnapd for every backup and lets each
# post-backup prune finish before the next day. Per day it records the backup job's
# time (started → finished from `job show`), envsnapd's CPU time during the job, the
# phases the daemon logs at debug level (src/repo/phases.rs), the store's index,
# manifest and lock objects, and, in daemon mode, the post-backup prune and the
# times of `backup list` and `env show`; in restart mode, the start-up time (launch
# until `status` answers). See benches/README.md.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/envsnap-history}
BENCH_GIB=${BENCH_GIB:-0.3}
BENCH_SQLITE_MB=${BENCH_SQLITE_MB:-50}
BENCH_SPARSE_GIB=${BENCH_SPARSE_GIB:-1}
BENCH_REBUILD=${BENCH_REBUILD:-0}
HIST_BACKUPS=${HIST_BACKUPS:-30}
HIST_MODES=${HIST_MODES:-"restart daemon"}
HIST_KEEP=${HIST_KEEP:-0}
HIST_KEEP_LAST=${HIST_KEEP_LAST:-0}
HIST_CHURN=${HIST_CHURN:-day}   # day: dataset.sh's churn_day (the data grows); hour: churn_hour (it does not)
[[ $HIST_CHURN == day || $HIST_CHURN == hour ]] || { echo "HIST_CHURN must be day or hour" >&2; exit 1; }
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
DATASET=$BENCH_DIR/dataset
RESULTS=$BENCH_DIR/results.md

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
for tool in python3 sqlite3 jq; do
  command -v $tool >/dev/null || die "$tool is needed"
done

# shellcheck source=benches/bins.sh
source "$REPO_ROOT/benches/bins.sh"
release_bins

# shellcheck source=benches/dataset.sh
source "$REPO_ROOT/benches/dataset.sh"
ensure_dataset


# --- one mode's run ---------------------------------------------------------------
now_s() { date +%s.%N; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ms_of() { python3 -c "import sys; print(round((float(sys.argv[2]) - float(sys.argv[1])) * 1000, 1))" "$1" "$2"; }

start_daemon() {  # start_daemon LOG: sets PID and STARTUP_MS
  local t0 t1
  t0=$(now_s)
  NO_COLOR=1 ENVSNAP_LOG=info,envsnap=debug "$BIN/envsnapd" --config "$WORK/envsnap.toml" >>"$1" 2>&1 &
  PID=$!
  for _ in $(seq 600); do
    "$CTL" status >/dev/null 2>&1 && break
    kill -0 "$PID" 2>/dev/null || { tail "$1" >&2; die "envsnapd died"; }
    sleep 0.02
  done
  t1=$(now_s)
  STARTUP_MS=$(ms_of "$t0" "$t1")
}

stop_daemon() {
  kill -TERM "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=
}

# Client wall time of a command in ms, the median of three.
time_cmd() {
  local runs=() t0 t1
  for _ in 1 2 3; do
    t0=$(now_s); "$@" >/dev/null; t1=$(now_s)
    runs+=("$(ms_of "$t0" "$t1")")
  done
  printf '%s\n' "${runs[@]}" | sort -n | sed -n 2p
}

# The phases of the last backup (and the prune) a log holds after byte OFFSET, as
# name=ms pairs.
phases_since() {
  tail -c +"$(($2 + 1))" "$1" | sed 's/\x1b\[[0-9;]*m//g' | python3 -c '
import re, sys
out = {}
for line in sys.stdin:
    m = re.search(r"operation=\"?([\w.]+)\"? phase=\"?([^\"]+?)\"? ms=([\d.]+)", line)
    if m:
        op, phase, ms = m.groups()
        if op in ("backup", "backup.lock", "backup.commit", "retention", "prune") :
            key = f"{op}:{phase}"
            if key not in out:
                out[key] = float(ms)
want = ["backup:parent", "backup.lock:wait for prune", "backup:parts", "backup:commit",
        "backup.commit:index", "retention:total", "prune:mark", "prune:store index"]
print(" ".join(k.replace(" ", "_") + "=" + str(out.get(k, "")) for k in want))
'
}

run_mode() {
  local mode=$1 day log offset job started finished cpu0 cpu1 list_ms show_ms phases
  WORK=$BENCH_DIR/run-$mode
  rm -rf "$WORK"
  mkdir -p "$WORK/state" "$WORK/run"
  cp -a --sparse=always "$DATASET" "$WORK/src"
  cat >"$WORK/envsnap.toml" <<EOF
[daemon]
host = "bench"
socket = "$WORK/run/envsnapd.sock"
state_dir = "$WORK/state"

[store]
url = "file://$WORK/store"

[environments.bench]
version = "1.0"
code = "$WORK/src/tree"
$(if ((HIST_KEEP_LAST > 0)); then printf 'retention = "1s"\nkeep_last = %d\n' "$HIST_KEEP_LAST"; fi)

[environments.bench.databases.app]
kind = "sqlite"
path = "$WORK/src/app.db"
EOF
  export ENVSNAP_SOCKET=$WORK/run/envsnapd.sock
  log="$WORK/envsnapd.log"
  : >"$log"
  PID=
  [[ $mode == daemon ]] && start_daemon "$log"
  for day in $(seq 0 "$HIST_BACKUPS"); do
    ((day > 0)) && "churn_$HIST_CHURN" "$WORK/src" "$day"
    sync
    offset=$(stat -c %s "$log")
    [[ $mode == restart ]] && start_daemon "$log"
    cpu0=$(cpu_ticks "$PID")
    job=$("$CTL" --json backup create bench --name "day-$day" --wait 2>/dev/null | jq -r '.job.id // .id')
    cpu1=$(cpu_ticks "$PID")
    read -r started finished < <("$CTL" --json job show "$job" | jq -r '"\(.started) \(.finished)"')
    list_ms='' show_ms='' startup=''
    if [[ $mode == restart ]]; then
      startup=$STARTUP_MS
      stop_daemon
    else
      # The post-backup prune must finish: it logs one "retention total" line (or,
      # from binaries without phase timings, leaves one index object). Only the log
      # since this backup is read: reading it all made each day slower than the last.
      for _ in $(seq 3000); do
        if grep -q 'operation=' "$log"; then
          tail -c +"$((offset + 1))" "$log" | sed 's/\x1b\[[0-9;]*m//g' |
            grep -q 'operation="retention" phase="total"' && break
        else
          (($(find "$WORK/store/bench/index" -type f | wc -l) == 1)) && break
        fi
        sleep 0.1
      done
      list_ms=$(time_cmd "$CTL" --json backup list bench)
      show_ms=$(time_cmd "$CTL" --json env show bench)
    fi
    phases=$(phases_since "$log" "$offset")
    printf '%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$day" \
      "$(python3 -c "from datetime import datetime as d; import sys; print(round((d.fromisoformat(sys.argv[2]) - d.fromisoformat(sys.argv[1])).total_seconds() * 1000))" "$started" "$finished")" \
      "$(( (cpu1 - cpu0) * 1000 / $(getconf CLK_TCK) ))" \
      "$(find "$WORK/store/bench/index" -type f | wc -l)" \
      "$(find "$WORK/store/bench/manifests" -type f | wc -l)" \
      "$(find "$WORK/store/bench/locks" -type f 2>/dev/null | wc -l)" \
      "${startup:-}" "${list_ms:-}" "${show_ms:-}" "$phases" "$(du -sb "$WORK/store" | cut -f1)" | tee -a "$ROWS"
  done
  [[ -n $PID ]] && stop_daemon
  [[ $HIST_KEEP == 1 ]] || rm -rf "$WORK"
}

ROWS=$BENCH_DIR/rows.tsv
: >"$ROWS"
trap '[[ -n ${PID:-} ]] && kill "$PID" 2>/dev/null; true' EXIT
log "columns: mode day job_ms cpu_ms index_objects manifests locks startup_ms list_ms show_ms phases store_bytes"
for mode in $HIST_MODES; do
  case $mode in restart|daemon) ;; *) die "unknown mode $mode (restart, daemon)" ;; esac
  log "mode $mode: $HIST_BACKUPS backups"
  run_mode "$mode"
done

# --- summary: day 1 against day N, and the first three against the last three ------
python3 - "$ROWS" "$HIST_BACKUPS" <<'PY' | tee "$RESULTS"
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
n = int(sys.argv[2])
def col(mode, i):
    if isinstance(i, int):
        return {int(r[1]): r[i] for r in rows if r[0] == mode}
    phases = lambda r: dict(p.split("=", 1) for p in r[10].split())
    return {int(r[1]): phases(r).get(i, "") for r in rows if r[0] == mode}
k = min(5, n)
print(f"| mode | figure | day 1 | day {n} | day {n} / day 1 | median of days 1-{k} | median of days {n - k + 1}-{n} | ratio of medians |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
names = {2: "backup job ms", 3: "envsnapd CPU ms during the job",
         "backup.lock:wait_for_prune": "backup waiting for a prune ms",
         "retention:total": "prune ms (restart: at start-up; daemon: after the backup)",
         "prune:mark": "prune's mark ms", 4: "index objects", 7: "start-up ms",
         8: "backup list ms", 9: "env show ms"}
for mode in sorted({r[0] for r in rows}, reverse=True):
    for i, name in names.items():
        c = {d: float(v) for d, v in col(mode, i).items() if v}
        if 1 not in c or n not in c:
            continue
        head = statistics.median(c[d] for d in range(1, k + 1) if d in c)
        tail = statistics.median(c[d] for d in range(n - k + 1, n + 1) if d in c)
        ratio = lambda a, b: f"{a / b:.2f}" if b >= 1 else "-"
        print(f"| {mode} | {name} | {c[1]:g} | {c[n]:g} | {ratio(c[n], c[1])} | {head:g} | {tail:g} | {ratio(tail, head)} |")
print()
print("Timings are noisy on a shared machine; the medians of five days and the CPU time")
print("of envsnapd are the figures to compare.")
PY
log "rows: $ROWS, summary: $RESULTS"
