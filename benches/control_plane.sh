#!/usr/bin/env bash
# Control-plane benchmark: how fast envsnapctl answers with a large catalog, and how
# much memory an idle envsnapd holds. Issue targets: with 10,000 backups,
# `backup list ENV --json` under 100 ms and `status` under 20 ms; idle daemon < 30 MiB.
#
#   bash benches/control_plane.sh            # 10,000 backups
#   BACKUPS=50000 bash benches/control_plane.sh
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
backups=${BACKUPS:-10000}
work=$(mktemp -d /tmp/envsnap-control.XXXXXX)
trap 'kill "${daemon_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null
echo "building release binaries..."
(cd "$repo" && cargo build --release --quiet --bins --example envsnap-seed)
bin="$repo/target/release"

mkdir -p "$work/app"
echo "<?php" > "$work/app/index.php"
cat > "$work/envsnap.toml" <<TOML
[daemon]
socket = "$work/envsnapd.sock"
state_dir = "$work/state"
[store]
url = "file://$work/store"
[environments.live]
version = "1.0"
code = "$work/app"
TOML

start_daemon() {
    "$bin/envsnapd" --config "$work/envsnap.toml" >"$work/daemon.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 100); do
        "$bin/envsnapctl" --socket "$work/envsnapd.sock" status >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "envsnapd did not start:" >&2; cat "$work/daemon.log" >&2; exit 1
}

start_daemon  # creates the catalog and the repository
kill "$daemon_pid"; wait "$daemon_pid" || true
echo "seeding $backups backups..."
"$bin/examples/envsnap-seed" "$work/state/catalog.sqlite" live "$backups"
start_daemon
sleep 1
ctl="$bin/envsnapctl --socket $work/envsnapd.sock --json"
test "$($ctl backup list live | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = "$backups"

hyperfine --warmup 3 --runs 30 --export-markdown "$work/results.md" \
    "$ctl backup list live" "$ctl status" "$ctl env list"
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$daemon_pid/status")
echo
cat "$work/results.md"
echo
echo "idle envsnapd resident memory: $((rss_kib / 1024)) MiB (${rss_kib} KiB) with $backups backups in the catalog"
