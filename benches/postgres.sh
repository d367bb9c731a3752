#!/usr/bin/env bash
# PostgreSQL benchmark: envsnap's database part against the native tools alone, on
# the same pgbench database, in one run, ROUNDS times over (medians reported). Issue
# 16's targets: backup and restore within 1.15x of `pg_dump -Fc` to a file and
# `pg_restore` from it; and a second backup of the unchanged database stores under 5%
# of its dump size.
#
#   bash benches/postgres.sh              # pgbench scale 50 (~750 MB database)
#   SCALE=10 bash benches/postgres.sh     # quick
#   ROUNDS=5 bash benches/postgres.sh     # rounds of every operation (default 3; medians)
#   KEEP=1 bash benches/postgres.sh       # keep the temp dir (dumps, store, logs)
#   ENVSNAP_BIN=target/release bash benches/postgres.sh   # prebuilt binaries, no build
#
# Runs as root: the throwaway PostgreSQL 15 server runs as the `postgres` user (like
# tests/support/servers.rs) in a temp dir, reachable only through a Unix socket there,
# with default settings (fsync on) except listen_addresses=''. See benches/README.md.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
scale=${SCALE:-50}
rounds=${ROUNDS:-3}
keep=${KEEP:-0}
pgbin=/usr/lib/postgresql/15/bin

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (the server runs as the postgres user via runuser)"
[[ -x $pgbin/initdb ]] || die "PostgreSQL 15 is not installed ($pgbin/initdb)"
id postgres >/dev/null 2>&1 || die "no postgres user"
need=()
[[ -x /usr/bin/time ]] || need+=(time)
command -v jq >/dev/null || need+=(jq)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null ||
    { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }
fi

# ------------------------------------------------------------ temp dir, cleanup --
work=$(mktemp -d /tmp/envsnap-pgbench.XXXXXX)
chmod 755 "$work"
pg=$work/pg                  # owned by postgres: data directory, socket, server log
mkdir "$pg" && chown postgres:postgres "$pg"
daemon_pid=""
sampler_pid=""
server_started=0
cleanup() {
  local status=$?
  set +e
  [[ -n $sampler_pid ]] && { kill "$sampler_pid" 2>/dev/null; wait "$sampler_pid" 2>/dev/null; }
  [[ -n $daemon_pid ]] && { kill "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null; }
  if ((server_started)); then
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$pg/data" -m fast -w stop >/dev/null 2>&1 ||
      runuser -u postgres -- "$pgbin/pg_ctl" -D "$pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [[ $keep == 1 ]]; then log "kept $work"; else rm -rf "$work"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------- binaries --
REPO_ROOT=$repo
# shellcheck source=benches/bins.sh
source "$repo/benches/bins.sh"
release_bins   # ENVSNAP_BIN=DIR: prebuilt binaries, no build
bin=$BIN

# --------------------------------------------------------------------- server --
log "starting PostgreSQL 15 in $pg (socket only, default settings)"
runuser -u postgres -- "$pgbin/initdb" -U postgres --auth-local=trust -E UTF8 --locale=C \
  -D "$pg/data" >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$pg/data" -l "$pg/server.log" -w \
  -o "-k $pg -c listen_addresses=" start >/dev/null
server_started=1
postmaster=$(head -n 1 "$pg/data/postmaster.pid")
conn=(-h "$pg" -U postgres)
psql_() { "$pgbin/psql" -X -q -At -v ON_ERROR_STOP=1 "${conn[@]}" "$@"; }
sql() { psql_ -d postgres -c "$1"; }

"$pgbin/createdb" "${conn[@]}" bench
log "loading pgbench -i -s $scale"
t0=$SECONDS
"$pgbin/pgbench" -i -q -s "$scale" "${conn[@]}" bench 2>"$work/pgbench.log" ||
  { cat "$work/pgbench.log" >&2; die "pgbench -i failed"; }
load_s=$((SECONDS - t0))
db_bytes=$(sql "SELECT pg_database_size('bench')")

# Content of a database, for checking the restores (untimed; also warms the cache).
fingerprint() {
  psql_ -d "$1" -c "
    SELECT 'accounts', count(*), sum(abalance), sum(hashtext(a::text)::bigint) FROM pgbench_accounts a
    UNION ALL SELECT 'branches', count(*), sum(bbalance), sum(hashtext(b::text)::bigint) FROM pgbench_branches b
    UNION ALL SELECT 'tellers', count(*), sum(tbalance), sum(hashtext(t::text)::bigint) FROM pgbench_tellers t
    UNION ALL SELECT 'history', count(*), 0, 0 FROM pgbench_history
    UNION ALL SELECT 'objects', count(*), 0, 0 FROM pg_class WHERE relnamespace = 'public'::regnamespace"
}
before=$(fingerprint bench)

# --------------------------------------------------------------- measurements --
rows=$work/rows.tsv   # round, op, seconds, rss MiB, child rss MiB, tool cpu, envsnapd cpu, server cpu, bytes
: >"$rows"
round=0

# CPU seconds (user + system) of a process, or of its reaped children (field 16, 17):
# the postmaster's children are the backends that served the finished connections.
cpu_of() { awk -v tck="$(getconf CLK_TCK)" '{ print ($14 + $15) / tck }' "/proc/$1/stat"; }
cpu_children() { awk -v tck="$(getconf CLK_TCK)" '{ print ($16 + $17) / tck }' "/proc/$1/stat"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
sub_() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }

# Flush the previous operation's dirty buffers so no one pays for another's writes.
checkpoint() { sql "CHECKPOINT"; sync; }

# Waits (at most 5 s) until the backends of finished connections have been reaped, so
# that their CPU time is in the postmaster's children fields before they are read.
# Backends are titled "postgres: USER DB [local] ...".
backends_left() {
  local c
  for c in $(cat /proc/"$postmaster"/task/*/children); do
    grep -qs -F '[local]' "/proc/$c/cmdline" && return 0
  done
  return 1
}
settle() {
  local _
  for _ in $(seq 50); do backends_left || return 0; sleep 0.1; done
}
server_cpu() { settle; cpu_children "$postmaster"; }

# native LABEL BYTES_FILE -- COMMAND...: times a native tool with /usr/bin/time
# (after a CHECKPOINT, unless called as `precheckpoint=0 native ...`).
native() {
  local label=$1 out=$2; shift 3
  [[ ${precheckpoint:-1} == 0 ]] || checkpoint
  local server0; server0=$(server_cpu)
  log "$label"
  /usr/bin/time -f '%e %M %U %S' -o "$work/time.out" "$@"
  local e m u s; read -r e m u s <"$work/time.out"
  local server1; server1=$(server_cpu)
  local bytes=-; [[ -n $out ]] && bytes=$(stat -c %s "$out")
  printf '%s\t%s\t%s\t%s\t-\t%s\t-\t%s\t%s\n' "$round" "$label" "$e" "$(mib "$m")" \
    "$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.1f", u + s }')" \
    "$(sub_ "$server1" "$server0")" "$bytes" >>"$rows"
}

# Every 0.2 s: the highest VmHWM among the daemon's children (pg_dump, pg_restore,
# psql), and which of them run (a timeline of the job's phases).
sample_children() {
  set +e   # a child that exits between listing and reading is expected
  local max=0 name=- c h running
  while :; do
    running=""
    for c in $(cat /proc/"$daemon_pid"/task/*/children 2>/dev/null); do
      running+="$(cat "/proc/$c/comm" 2>/dev/null):$c+"
      h=$(awk '/^VmHWM/ { print $2 }' "/proc/$c/status" 2>/dev/null) || continue
      if [[ -n $h ]] && ((h > max)); then max=$h; name=$(cat "/proc/$c/comm" 2>/dev/null || echo ?); fi
    done
    echo "$max $name" >"$work/children.peak"
    echo "$EPOCHREALTIME ${running%+}" >>"$work/timeline"
    sleep 0.2
  done
}

# The timeline as phases, one per child process (or none: envsnapd alone), in order:
# "(envsnapd) 0.2 s, pg_restore 41.0 s, psql 2.2 s, ...". A phase shorter than a
# sample may not show.
phases() {
  awk 'function name(w) { gsub(/:[0-9]+/, "", w); return w }
       { t = $1; what = ($2 == "" ? "(envsnapd)" : $2) }
       NR > 1 && what != cur { out = out sprintf("%s%s %.1f s", sep, name(cur), t - start); sep = ", "; start = t }
       NR == 1 { start = t } { cur = what; last = t }
       END { printf "%s%s%s %.1f s\n", out, sep, name(cur), last - start }' "$work/timeline"
}

# envsnap LABEL -- ENVSNAPCTL ARGS...: times envsnapctl (which waits for the job);
# memory and CPU are the daemon's (peak RSS reset first) and its tools'.
envsnap() {
  local label=$1; shift 2
  checkpoint
  echo 5 >"/proc/$daemon_pid/clear_refs"   # resets VmHWM
  local d0 c0 server0
  d0=$(cpu_of "$daemon_pid"); c0=$(cpu_children "$daemon_pid"); server0=$(server_cpu)
  echo "0 -" >"$work/children.peak"
  : >"$work/timeline"
  sample_children & sampler_pid=$!
  log "$label"
  /usr/bin/time -f '%e %M %U %S' -o "$work/time.out" \
    "$bin/envsnapctl" --socket "$work/envsnapd.sock" --json "$@" >"$work/last.json" ||
    { cat "$work/last.json" >&2; tail -n 20 "$work/daemon.log" >&2; die "$label failed"; }
  kill "$sampler_pid" 2>/dev/null || true; wait "$sampler_pid" 2>/dev/null || true; sampler_pid=""
  local e rest; read -r e rest <"$work/time.out"
  local hwm; hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$daemon_pid/status")
  local child child_name; read -r child child_name <"$work/children.peak"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t-\n' "$round" "$label" "$e" "$(mib "$hwm")" "$( ((child)) && echo "$(mib "$child") $child_name" || echo "-")" \
    "$(sub_ "$(cpu_children "$daemon_pid")" "$c0")" "$(sub_ "$(cpu_of "$daemon_pid")" "$d0")" \
    "$(sub_ "$(server_cpu)" "$server0")" >>"$rows"
  printf -- '- round %s, %s: %s\n' "$round" "$label" "$(phases)" >>"$work/phases"
}

# Native tools alone: dump to a file, both ways, and restore each dump into a new
# database.
native_round() {
  native "native pg_dump -Fc" "$work/bench.dump" -- \
    "$pgbin/pg_dump" "${conn[@]}" -Fc -f "$work/bench.dump" bench
  native "native pg_dump -Fc --compress=0" "$work/bench.c0.dump" -- \
    "$pgbin/pg_dump" "${conn[@]}" -Fc --compress=0 -f "$work/bench.c0.dump" bench
  "$pgbin/createdb" "${conn[@]}" restored
  native "native pg_restore (from -Fc)" "" -- \
    "$pgbin/pg_restore" "${conn[@]}" --single-transaction -d restored "$work/bench.dump"
  precheckpoint=0 native "  CHECKPOINT after it" "" -- "$pgbin/psql" -X -q "${conn[@]}" -d postgres -c CHECKPOINT
  [[ $(fingerprint restored) == "$before" ]] || die "the native restore differs from the original"
  sql "DROP DATABASE restored"
  "$pgbin/createdb" "${conn[@]}" restored
  native "native pg_restore (from --compress=0)" "" -- \
    "$pgbin/pg_restore" "${conn[@]}" --single-transaction -d restored "$work/bench.c0.dump"
  sql "DROP DATABASE restored"
}

# `code` is optional (docs/config.md): the environment has only its database part.
cat >"$work/envsnap.toml" <<TOML
[daemon]
host = "bench-host"
socket = "$work/envsnapd.sock"
state_dir = "$work/state"
max_jobs = 1

[store]
url = "file://$work/store"

[environments.bench]
version = "1.0"

[environments.bench.databases.bench]
kind = "postgres"
database = "bench"
host = "$pg"
user = "postgres"
TOML

start_envsnapd() {  # on an empty store and state
  rm -rf "$work/store" "$work/state"
  log "starting envsnapd"
  ENVSNAP_LOG=info "$bin/envsnapd" --config "$work/envsnap.toml" >>"$work/daemon.log" 2>&1 &
  daemon_pid=$!
  for _ in $(seq 100); do
    "$bin/envsnapctl" --socket "$work/envsnapd.sock" status >/dev/null 2>&1 && return 0
    kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/daemon.log" >&2; die "envsnapd exited"; }
    sleep 0.1
  done
  die "envsnapd did not answer within 10 s"
}
stop_envsnapd() {
  kill "$daemon_pid" 2>/dev/null || true
  wait "$daemon_pid" 2>/dev/null || true
  daemon_pid=""
}

part_field() {  # FIELD of the database part in the last backup create result
  jq -r --arg f "$1" '.backup.parts[] | select(.part == "database:bench") | .[$f]' "$work/last.json"
}

# envsnap on a new store: a first backup, a second of the unchanged database, and a
# restore of the second over the database.
envsnap_round() {
  start_envsnapd
  envsnap "envsnap backup (first)" -- backup create bench --name first --wait
  first_size=$(part_field size); first_stored=$(part_field stored)
  envsnap "envsnap backup (unchanged)" -- backup create bench --name second --wait
  second_size=$(part_field size); second_stored=$(part_field stored)
  envsnap "envsnap restore" -- restore bench second --yes --wait --no-safety-backup
  [[ $(fingerprint bench) == "$before" ]] || die "the envsnap restore differs from the original"
  local leftover
  leftover=$(sql "SELECT string_agg(datname, ' ') FROM pg_database WHERE datname LIKE '%envsnap%'")
  [[ -z $leftover ]] || die "temporary databases left: $leftover"
  store_bytes=$(du -sb "$work/store" | cut -f1)
  stop_envsnapd
}

# Rounds alternate the native tools and envsnap, so that a slow spell of this shared
# machine does not fall on one side only; the report gives medians.
for round in $(seq "$rounds"); do
  log "round $round of $rounds"
  native_round
  envsnap_round
done

# --------------------------------------------------------------------- report --
# The median over the rounds of OP's seconds (of a column of numbers on stdin).
median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.2f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
times_of() { awk -F'\t' -v op="$1" '$2 == op { print $3 }' "$rows"; }
secs() { times_of "$1" | median; }
spread() { times_of "$1" | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# OP_A / OP_B round by round ("1.11, 1.19, 1.05").
paired() {
  awk -F'\t' -v a="$1" -v b="$2" '$2 == a { x[$1] = $3 } $2 == b { y[$1] = $3 }
    END { for (r = 1; r in x; r++) printf "%s%.2f", (r > 1 ? ", " : ""), x[r] / y[r] }' "$rows"
}
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f%%", 100 * a / b }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r <= t ? "ok" : "MISSED") }'; }
dump_bytes=$(stat -c %s "$work/bench.dump")
c0_bytes=$(stat -c %s "$work/bench.c0.dump")
b_ratio=$(ratio "$(secs "envsnap backup (first)")" "$(secs "native pg_dump -Fc")")
b2_ratio=$(ratio "$(secs "envsnap backup (unchanged)")" "$(secs "native pg_dump -Fc")")
r_ratio=$(ratio "$(secs "envsnap restore")" "$(secs "native pg_restore (from -Fc)")")
ops=("native pg_dump -Fc" "native pg_dump -Fc --compress=0" "native pg_restore (from -Fc)"
     "  CHECKPOINT after it" "native pg_restore (from --compress=0)" "envsnap backup (first)"
     "envsnap backup (unchanged)" "envsnap restore")

{
  echo
  echo "## envsnap vs pg_dump/pg_restore: pgbench scale $scale"
  echo
  echo "PostgreSQL $(sql 'SHOW server_version'), database $((db_bytes / 1048576)) MiB" \
       "(pgbench -i took ${load_s} s), $(nproc) CPUs, envsnap $("$bin/envsnapctl" --version | awk '{ print $2 }')."
  echo "CPU s: user + system; server = backends of the finished connections."
  echo "envsnap rows: peak RSS is envsnapd's; 'child' is the tool it ran (sampled every 0.2 s)."
  echo
  echo "$rounds rounds, each the native tools then envsnap on a new store; medians:"
  echo
  echo "| operation | median s | range s |"
  echo "|---|---:|---:|"
  for op in "${ops[@]}"; do echo "| $op | $(secs "$op") | $(spread "$op") |"; done
  echo
  echo "Every operation:"
  echo
  echo "| round | operation | seconds | peak RSS MiB | child RSS MiB | tool CPU s | envsnapd CPU s | server CPU s | bytes |"
  echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
  awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }' "$rows"
  echo
  echo "Phases of the envsnap jobs (what envsnapd was running, sampled every 0.2 s):"
  echo
  cat "$work/phases"
  echo
  echo "| measure (medians) | value | round by round | target |"
  echo "|---|---:|---|---|"
  echo "| envsnap backup / native pg_dump -Fc | ${b_ratio}x | $(paired "envsnap backup (first)" "native pg_dump -Fc") | <= 1.15x: $(verdict "$b_ratio" 1.15) |"
  echo "| envsnap unchanged backup / native pg_dump -Fc | ${b2_ratio}x | $(paired "envsnap backup (unchanged)" "native pg_dump -Fc") | |"
  echo "| envsnap backup / native pg_dump -Fc --compress=0 | $(ratio "$(secs "envsnap backup (first)")" "$(secs "native pg_dump -Fc --compress=0")")x | | |"
  echo "| envsnap restore / native pg_restore | ${r_ratio}x | $(paired "envsnap restore" "native pg_restore (from -Fc)") | <= 1.15x: $(verdict "$r_ratio" 1.15) |"
  echo "| envsnap restore / (native pg_restore + CHECKPOINT) | $(ratio "$(secs "envsnap restore")" "$(awk -v a="$(secs "native pg_restore (from -Fc)")" -v b="$(secs "  CHECKPOINT after it")" 'BEGIN { print a + b }')")x | | |"
  echo "| second backup stored / its dump size (last round) | $second_stored / $second_size B = $(pct "$second_stored" "$second_size") | | < 5%: $(verdict "$(ratio "$second_stored" "$second_size")" 0.05) |"
  echo "| second backup stored / native -Fc file | $(pct "$second_stored" "$dump_bytes") | | |"
  echo "| first backup stored / native -Fc file | $first_stored / $dump_bytes B = $(ratio "$first_stored" "$dump_bytes")x | | |"
  echo "| envsnap part size / native --compress=0 file | $first_size / $c0_bytes B | | |"
  echo "| store on disk after both backups | $store_bytes B | | |"
} | tee "$work/results.md"
