#!/usr/bin/env bash
# Fleet benchmark (issue 13): `envsnapctl fleet list --json` over a store holding a
# synthetic fleet of 1,000 hosts × 5 environments × 14 backups (a status object and
# 70 manifest objects per host), once on a local directory store and once on the
# s3s-fs S3 server on loopback. Targets: local under 1 s, S3 under 5 s, and the
# daemon's peak memory while serving it under 64 MiB.
#
#   bash benches/fleet.sh                       # 1,000 hosts
#   HOSTS=200 RUNS=3 bash benches/fleet.sh
#   ENVSNAP_BIN=/path/to/binaries bash benches/fleet.sh   # no build
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
hosts=${HOSTS:-1000}
envs=${ENVS:-5}
backups=${BACKUPS:-14}
runs=${RUNS:-5}
work=$(mktemp -d /tmp/envsnap-fleet.XXXXXX)
cleanup() {
    kill "${daemon_pid:-}" "${s3_pid:-}" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

if [[ -n "${ENVSNAP_BIN:-}" ]]; then
    bin=$(cd "$ENVSNAP_BIN" && pwd)   # envsnapd, envsnapctl and envsnap-fleet-seed
else
    echo "building release binaries..."
    (cd "$repo" && cargo build --release --quiet --bins --example envsnap-fleet-seed)
    bin="$repo/target/release"
    cp "$bin/examples/envsnap-fleet-seed" "$bin/"
fi
ctl() { "$bin/envsnapctl" --socket "$work/envsnapd.sock" "$@"; }

start_daemon() { # URL
    rm -rf "$work/state"
    mkdir -p "$work/app"
    cat > "$work/envsnap.toml" <<TOML
[daemon]
host = "bench-host"
socket = "$work/envsnapd.sock"
state_dir = "$work/state"
[store]
url = "$1"
[environments.live]
version = "1.0"
code = "$work/app"
TOML
    "$bin/envsnapd" --config "$work/envsnap.toml" >"$work/daemon.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 200); do
        ctl status >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "envsnapd did not start:" >&2; cat "$work/daemon.log" >&2; exit 1
}

stop_daemon() {
    kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true; daemon_pid=""
}

# Median wall time of `fleet list --json` over $runs runs, the hosts it listed, and
# the daemon's peak resident memory.
measure() { # LABEL URL TARGET_SECONDS
    local label=$1 url=$2 target=$3
    local seeded=$SECONDS
    "$bin/envsnap-fleet-seed" "$url" "$hosts" "$envs" "$backups"
    echo "  seeding took $((SECONDS - seeded)) s"
    start_daemon "$url"
    ctl --json fleet list > "$work/fleet.json"   # warm-up
    local times=()
    for _ in $(seq "$runs"); do
        local start end
        start=$(date +%s.%N)
        ctl --json fleet list > "$work/fleet.json"
        end=$(date +%s.%N)
        times+=("$(echo "$end - $start" | bc)")
    done
    local median listed peak
    median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    listed=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/fleet.json")
    peak=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$daemon_pid/status")
    stop_daemon
    printf '%-6s fleet list: median %.3f s over %s runs (target < %s s), %s hosts listed, daemon peak %s MiB (target < 64)\n' \
        "$label" "$median" "$runs" "$target" "$listed" "$peak" | tee -a "$work/results"
}

echo "fleet of $hosts hosts × $envs environments × $backups backups"
measure local "file://$work/local" 1

s3s=$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")
if [[ -x "$s3s" ]]; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$work/s3/fleet"
    "$s3s" --host 127.0.0.1 --port "$port" --access-key bench --secret-key bench-secret \
        "$work/s3" >/dev/null 2>&1 &
    s3_pid=$!
    export AWS_ENDPOINT="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
        AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret \
        AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    measure s3 "s3://fleet/store" 5
else
    echo "s3s-fs not installed (cargo install s3s-fs --features binary): S3 case skipped"
fi
echo
cat "$work/results"
