#!/usr/bin/env bash
# Soak test: a real envsnapd backing up a changing environment every minute for a
# set time, with `envsnapctl prune` every few minutes, watched for growth.
#
#   bash benches/soak.sh                   # 60 minutes, debug binaries (cargo build --bins)
#   bash benches/soak.sh 5                 # 5 minutes
#   ENVSNAP_BIN=target/release bash benches/soak.sh 60   # binaries from that directory
#
# Settings (environment): SOAK_FILES (300 files in the tree), SOAK_SAMPLE_MINUTES (a
# CSV row every so often, besides the start and the end: 1 for runs under 15
# minutes, else 3), SOAK_PRUNE_MINUTES (5),
# SOAK_RETENTION (15m: backups expire within the run, so prune deletes some and the
# store can level off), SOAK_KEEP=1 keeps the work directory.
#
# The daemon gets its own state directory, socket and local store in a temp
# directory. Each minute a tenth of the files are rewritten, a few are added and
# removed, and rows are inserted into a SQLite database. Samples go to a CSV (RSS,
# open descriptors, threads, the catalog file and its write-ahead log, state
# directory and store sizes, backups listed, failed jobs); at the end a table
# compares the start, the end of the
# warm-up (a third of the run, or one retention period if longer) and the end, and
# flags what grew by more than a quarter after the warm-up.
# Works as root and as a normal user (the daemon runs as whoever runs the script).
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
minutes=${1:-60}
files=${SOAK_FILES:-300}
sample_every=${SOAK_SAMPLE_MINUTES:-$(( minutes < 15 ? 1 : 3 ))}
prune_every=${SOAK_PRUNE_MINUTES:-5}
retention=${SOAK_RETENTION:-15m}

if [ -n "${ENVSNAP_BIN:-}" ]; then
    bin=$(cd "$ENVSNAP_BIN" && pwd)
else
    echo "building envsnapd and envsnapctl (cargo build --bins)..."
    (cd "$repo_root" && cargo build --bins --quiet)
    bin=$repo_root/target/debug
fi
for tool in "$bin/envsnapd" "$bin/envsnapctl"; do
    [ -x "$tool" ] || { echo "no $tool" >&2; exit 2; }
done
command -v sqlite3 >/dev/null || { echo "sqlite3 is needed (apt-get install sqlite3)" >&2; exit 2; }

work=$(mktemp -d /tmp/envsnap-soak.XXXXXX)
csv=$work/soak.csv
daemon_pid=
cleanup() {
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill "$daemon_pid"
        wait "$daemon_pid" 2>/dev/null || true
    fi
    if [ "${SOAK_KEEP:-0}" = 1 ]; then
        echo "kept $work"
    else
        # The CSV outlives the work directory (where the user may write).
        { mkdir -p "$repo_root/target/soak" &&
            cp "$csv" "$repo_root/target/soak/soak-$(date -u +%Y%m%dT%H%M%SZ).csv"; } 2>/dev/null || true
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# --- the environment: a tree of a few hundred files and a SQLite database ---------
app=$work/env/app
mkdir -p "$app" "$work/env/data" "$work/run" "$work/state"
for i in $(seq "$files"); do
    dir=$app/dir$((i % 10))
    mkdir -p "$dir"
    head -c $(( (RANDOM % 20 + 1) * 1024 )) /dev/urandom >"$dir/file$i.bin"
done
db=$work/env/data/app.db
sqlite3 "$db" "CREATE TABLE events (id INTEGER PRIMARY KEY, at TEXT, body TEXT);"
next_file=$((files + 1))

change_environment() {
    local n
    for n in $(seq $((files / 10))); do
        local victim
        victim=$(find "$app" -type f | shuf -n 1)
        head -c $(( (RANDOM % 20 + 1) * 1024 )) /dev/urandom >"$victim"
    done
    for n in 1 2 3; do
        head -c 4096 /dev/urandom >"$app/dir$((next_file % 10))/file$next_file.bin"
        next_file=$((next_file + 1))
        find "$app" -type f | shuf -n 1 | xargs rm -f
    done
    sqlite3 "$db" "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
        INSERT INTO events (at, body) SELECT datetime('now'), hex(randomblob(64)) FROM n;"
}

# --- the daemon ---------------------------------------------------------------------
config=$work/envsnap.toml
cat >"$config" <<EOF
[daemon]
host = "soak"
socket = "$work/run/envsnapd.sock"
state_dir = "$work/state"

[store]
url = "file://$work/store"

[environments.soak]
version = "1.0"
schedule = ["* * * * *"]
retention = "$retention"
code = "$app"

[environments.soak.databases.app]
kind = "sqlite"
path = "$db"
EOF
export ENVSNAP_SOCKET=$work/run/envsnapd.sock
"$bin/envsnapd" --config "$config" >"$work/envsnapd.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do
    "$bin/envsnapctl" status >/dev/null 2>&1 && break
    kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/envsnapd.log" >&2; exit 1; }
    sleep 0.2
done
"$bin/envsnapctl" status >/dev/null

# --- samples ------------------------------------------------------------------------
bytes_of() { du -sb "$@" 2>/dev/null | awk '{ total += $1 } END { print total + 0 }'; }
sample() {
    local at=$1 rss fds threads catalog wal state store backups failed
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$daemon_pid/status")
    threads=$(awk '/^Threads:/ { print $2 }' "/proc/$daemon_pid/status")
    fds=$(find "/proc/$daemon_pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
    catalog=$(bytes_of "$work/state/catalog.sqlite")
    wal=$(bytes_of "$work/state/catalog.sqlite-wal")
    state=$(bytes_of "$work/state")
    store=$(bytes_of "$work/store")
    backups=$("$bin/envsnapctl" backup list soak --json | { grep -o '"trigger"' || true; } | wc -l)
    failed=$("$bin/envsnapctl" job list --json | { grep -o '"state": *"failed"' || true; } | wc -l)
    echo "$at,$rss,$fds,$threads,$catalog,$wal,$state,$store,$backups,$failed" >>"$csv"
    printf '%4s min  rss %6s KiB  fds %3s  threads %3s  catalog %9s B (+ wal %8s B)  state %10s B  store %10s B  backups %3s  failed jobs %s\n' \
        "$((at / 60))" "$rss" "$fds" "$threads" "$catalog" "$wal" "$state" "$store" "$backups" "$failed"
}

echo "soak: envsnapd pid $daemon_pid in $work, $minutes minutes, a backup each minute"
echo "seconds,rss_kib,fds,threads,catalog_bytes,catalog_wal_bytes,state_bytes,store_bytes,backups,failed_jobs" >"$csv"
start=$(date +%s)
sample 0
for minute in $(seq "$minutes"); do
    sleep $(( start + minute * 60 - $(date +%s) > 0 ? start + minute * 60 - $(date +%s) : 0 ))
    kill -0 "$daemon_pid" 2>/dev/null || { echo "envsnapd died" >&2; tail "$work/envsnapd.log" >&2; exit 1; }
    change_environment
    if [ $((minute % prune_every)) -eq 0 ]; then
        "$bin/envsnapctl" prune >>"$work/prune.log" 2>&1 || echo "prune failed (see $work/prune.log)"
    fi
    if [ $((minute % sample_every)) -eq 0 ] || [ "$minute" -eq "$minutes" ]; then
        sample $((minute * 60))
    fi
done

# --- the verdict --------------------------------------------------------------------
case $retention in
    *m) retention_minutes=${retention%m} ;;
    *h) retention_minutes=$(( ${retention%h} * 60 )) ;;
    *) retention_minutes=0 ;;
esac
warm_minutes=$(( minutes / 3 > retention_minutes ? minutes / 3 : retention_minutes ))
[ "$warm_minutes" -lt "$minutes" ] || warm_minutes=$((minutes / 3))
[ "$warm_minutes" -ge 1 ] || warm_minutes=1
echo
echo "figures: start, after the warm-up (minute $warm_minutes) and end ($minutes min); CSV: $csv"
if [ "$warm_minutes" -lt "$retention_minutes" ]; then
    echo "(the run is shorter than the retention ($retention): the store and the catalog are still filling)"
fi
awk -F, -v warm=$((warm_minutes * 60)) '
    NR == 1 { for (i = 2; i <= NF; i++) name[i] = $i; next }
    NR == 2 { for (i = 2; i <= NF; i++) first[i] = $i }
    $1 <= warm { for (i = 2; i <= NF; i++) mid[i] = $i }
    { for (i = 2; i <= NF; i++) last[i] = $i; columns = NF }
    END {
        # Slack below which growth is noise: KiB of RSS, descriptors, threads, bytes.
        # The write-ahead log is checkpointed near 4 MiB: more means it never is.
        slack["rss_kib"] = 8192; slack["fds"] = 4; slack["threads"] = 4
        slack["catalog_bytes"] = slack["state_bytes"] = slack["store_bytes"] = 1048576
        slack["catalog_wal_bytes"] = 8388608
        printf "%-18s %12s %12s %12s  %s\n", "", "start", "warm", "end", "verdict"
        for (i = 2; i <= columns; i++) {
            verdict = "ok"
            if (name[i] in slack && last[i] > mid[i] * 1.25 && last[i] - mid[i] > slack[name[i]])
                verdict = "GROWING after the warm-up"
            if (name[i] == "failed_jobs" && last[i] > 0) verdict = "FAILED JOBS"
            if (name[i] == "backups") verdict = ""
            printf "%-18s %12s %12s %12s  %s\n", name[i], first[i], mid[i], last[i], verdict
        }
    }' "$csv"
errors=$(grep -c ' ERROR ' "$work/envsnapd.log" || true)
echo "daemon log: $errors ERROR lines"
