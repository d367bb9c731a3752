#!/usr/bin/env bash
# Restore drill benchmark: a drill of the benchmark environment (files plus a pgbench
# database) against a full restore of the same backup plus a bare `pg_restore` into
# a fresh cluster, in one run. Issue target ("Restore drills"): the drill takes at
# most 1.2x the sum of those two, and envsnapd's peak memory stays flat (about the
# same as for the restore, whatever the data size).
#
#   bash benches/drill.sh                    # pgbench scale 50, ~500 MiB of files
#   SCALE=5 FILES_MIB=100 bash benches/drill.sh   # quick
#   KEEP=1 bash benches/drill.sh             # keep the temp dir (store, logs)
#
# Runs as root: the live PostgreSQL 15 server and the bare comparison cluster run as
# the `postgres` user in the temp dir (socket only); the drill's scratch cluster runs
# as daemon.drill_user. Builds the release binaries first.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
scale=${SCALE:-50}
files_mib=${FILES_MIB:-500}
keep=${KEEP:-0}
pgbin=/usr/lib/postgresql/15/bin

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root"
[[ -x $pgbin/initdb ]] || die "PostgreSQL 15 is not installed ($pgbin/initdb)"
id postgres >/dev/null 2>&1 || die "no postgres user"
[[ -x /usr/bin/time ]] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null

work=$(mktemp -d /tmp/envsnap-drill-bench.XXXXXX)
chmod 755 "$work"
live_pg=$work/live-pg
bare_pg=$work/bare-pg
mkdir "$live_pg" "$bare_pg" && chown postgres:postgres "$live_pg" "$bare_pg"
daemon_pid=""
cleanup() {
  local status=$?
  set +e
  [[ -n $daemon_pid ]] && { kill "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null; }
  for d in "$live_pg" "$bare_pg"; do
    [[ -f $d/data/postmaster.pid ]] &&
      runuser -u postgres -- "$pgbin/pg_ctl" -D "$d/data" -m immediate -w stop >/dev/null 2>&1
  done
  if [[ $keep == 1 ]]; then log "kept $work"; else rm -rf "$work"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building release binaries (cargo build --release --bins)"
(cd "$repo" && cargo build --release --bins >"$work/cargo.log" 2>&1) ||
  { tail -n 30 "$work/cargo.log" >&2; die "cargo build failed"; }
bin=$repo/target/release

start_cluster() {  # DIR: initdb and start a socket-only cluster there
  runuser -u postgres -- "$pgbin/initdb" -U postgres --auth-local=trust -E UTF8 --locale=C \
    -D "$1/data" >/dev/null
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$1/data" -l "$1/server.log" -w \
    -o "-k $1 -c listen_addresses=" start >/dev/null
}

log "live PostgreSQL 15 with pgbench -i -s $scale"
start_cluster "$live_pg"
"$pgbin/createdb" -h "$live_pg" -U postgres bench
"$pgbin/pgbench" -i -q -s "$scale" -h "$live_pg" -U postgres bench 2>"$work/pgbench.log"
db_mib=$(( $("$pgbin/psql" -X -At -h "$live_pg" -U postgres -d postgres \
  -c "SELECT pg_database_size('bench')") / 1048576 ))

log "about $files_mib MiB of real files"
# Whole directories of this machine's files (/usr/share/*/*, then /usr/lib/*/*),
# taken in order until the budget is reached: many small files and some large ones.
mkdir -p "$work/live/files"
budget=$((files_mib * 1048576))
while IFS= read -r -d '' dir; do
  (( $(du -sb "$work/live/files" | cut -f1) < budget )) || break
  mkdir -p "$work/live/files$(dirname "$dir")"
  cp -a "$dir" "$work/live/files$(dirname "$dir")/" 2>/dev/null || true
done < <(find /usr/share /usr/lib -mindepth 2 -maxdepth 2 -type d -print0 | sort -z)
content_bytes() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
files_bytes=$(content_bytes "$work/live/files")

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

[environments.bench.mounts.files]
path = "$work/live/files"

[environments.bench.databases.bench]
kind = "postgres"
database = "bench"
host = "$live_pg"
user = "postgres"
TOML
ENVSNAP_LOG=info "$bin/envsnapd" --config "$work/envsnap.toml" >"$work/daemon.log" 2>&1 &
daemon_pid=$!
ctl() { "$bin/envsnapctl" --socket "$work/envsnapd.sock" "$@"; }
for _ in $(seq 100); do ctl status >/dev/null 2>&1 && break; sleep 0.1; done
log "backup"
ctl backup create bench --name base --wait >/dev/null
ctl backup download bench base --part database:bench -o "$work/bench.dump" >/dev/null

rows=$work/rows.tsv
: >"$rows"
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
# timed LABEL -- COMMAND...: wall seconds, and envsnapd's peak RSS during it (reset first).
timed() {
  local label=$1; shift 2
  sync
  echo 5 >"/proc/$daemon_pid/clear_refs"
  log "$label"
  /usr/bin/time -f '%e' -o "$work/time.out" "$@" >"$work/last.out" 2>&1 ||
    { cat "$work/last.out" >&2; tail -n 20 "$work/daemon.log" >&2; die "$label failed"; }
  local hwm; hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$daemon_pid/status")
  printf '%s\t%s\t%s\n' "$label" "$(cat "$work/time.out")" "$(mib "$hwm")" >>"$rows"
}

timed "envsnap drill" -- "$bin/envsnapctl" --socket "$work/envsnapd.sock" drill bench base --wait
cp "$work/last.out" "$work/drill.txt"
# A full restore: the files are gone (nothing to keep), the database is replaced.
rm -rf "$work/live/files"
timed "envsnap full restore" -- "$bin/envsnapctl" --socket "$work/envsnapd.sock" \
  restore bench base --yes --wait --no-safety-backup
[[ $(content_bytes "$work/live/files") == "$files_bytes" ]] || die "the restore differs in size"
timed "bare pg_restore into a fresh cluster" -- bash -c "
  set -e
  runuser -u postgres -- $pgbin/initdb -U postgres --auth-local=trust -E UTF8 --locale=C -D $bare_pg/data >/dev/null
  runuser -u postgres -- $pgbin/pg_ctl -D $bare_pg/data -l $bare_pg/server.log -w -o '-k $bare_pg -c listen_addresses=' start >/dev/null
  $pgbin/createdb -h $bare_pg -U postgres bench
  $pgbin/pg_restore -h $bare_pg -U postgres --exit-on-error -d bench $work/bench.dump"

secs() { awk -F'\t' -v op="$1" '$1 == op { print $2 }' "$rows"; }
peak() { awk -F'\t' -v op="$1" '$1 == op { print $3 }' "$rows"; }
drill=$(secs "envsnap drill")
sum=$(awk -v a="$(secs "envsnap full restore")" -v b="$(secs "bare pg_restore into a fresh cluster")" 'BEGIN { print a + b }')
ratio=$(awk -v a="$drill" -v b="$sum" 'BEGIN { printf "%.2f", a / b }')
{
  echo
  echo "## envsnap drill vs full restore + bare pg_restore: pgbench scale $scale, $((files_bytes / 1048576)) MiB of files"
  echo
  echo "Database $db_mib MiB; $(nproc) CPUs; envsnap $("$bin/envsnapctl" --version | awk '{ print $2 }')."
  echo
  echo "| operation | seconds | envsnapd peak RSS MiB |"
  echo "|---|---:|---:|"
  awk -F'\t' '{ printf "| %s | %s | %s |\n", $1, $2, $3 }' "$rows"
  echo
  echo "| measure | value | target |"
  echo "|---|---:|---|"
  echo "| drill / (full restore + bare pg_restore) | ${ratio}x | <= 1.2x: $(awk -v r="$ratio" 'BEGIN { print (r <= 1.2 ? "ok" : "MISSED") }') |"
  echo "| envsnapd peak RSS: drill / restore | $(peak "envsnap drill") / $(peak "envsnap full restore") MiB | flat |"
  echo
  echo "The drill's report:"
  echo
  sed 's/^/    /' "$work/drill.txt"
} | tee "$work/results.md"
