#!/usr/bin/env bash
# Runs the fuzz targets (tests/fuzz) for SECONDS each, with a fresh random seed, and
# prints the inputs tried and the failures of each. A failing input is kept in
# fuzz/crashes/TARGET/ and named in the table; the exit status is 1 if any failed.
#
#   fuzz/run.sh                    # every target, 60 s each
#   fuzz/run.sh 600                # 10 minutes each
#   fuzz/run.sh 600 tar_import pg_roles
#   FUZZ_JOBS=2 fuzz/run.sh 600    # two targets at a time (one core each)
#
# Each run's figures are appended to fuzz/logs/runs.tsv (date, target, seconds,
# inputs, failures, seed); the full output of the last run of a target is in
# fuzz/logs/TARGET.log. Runs under `nice`: it is meant to share a machine.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
shift || true
jobs=${FUZZ_JOBS:-1}
cd "$root"

echo "building the test binary..."
binary=$(cargo test --test integration --no-run 2>&1 \
    | sed -n 's/.*(\(target\/[^)]*integration-[0-9a-f]*\)).*/\1/p' | tail -1)
[ -x "$binary" ] || { echo "could not build or find the integration test binary" >&2; exit 2; }
# A copy of its own: a build during the run (cargo test elsewhere) does not change it.
mkdir -p fuzz/logs
cp "$binary" fuzz/logs/integration-fuzz
binary=fuzz/logs/integration-fuzz

if [ $# -gt 0 ]; then
    targets=("$@")
else
    # Every test fuzz::NAME whose NAME has a corpus directory is a target.
    mapfile -t targets < <("$binary" --list 2>/dev/null \
        | sed -n 's/^fuzz::\([a-z_]*\): test$/\1/p' \
        | while read -r name; do [ -d "fuzz/corpus/$name" ] && echo "$name"; done)
fi

run_one() {
    local name=$1
    ENVSNAP_FUZZ_SECONDS=$seconds nice "$binary" --exact "fuzz::$name" --nocapture \
        --test-threads=1 >"fuzz/logs/$name.log" 2>&1 || true
}

echo "fuzzing ${#targets[@]} targets for ${seconds}s each, $jobs at a time..."
running=0
for name in "${targets[@]}"; do
    run_one "$name" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait

failed=0
printf '%-18s %10s %12s  %s\n' target seconds inputs result
for name in "${targets[@]}"; do
    log="fuzz/logs/$name.log"
    summary=$(grep -oE "fuzz $name: .*" "$log" | tail -1 || true)
    seed=$(sed -n 's/.*seed \([0-9]*\).*/\1/p' <<<"$summary")
    if [[ $summary =~ ^fuzz\ $name:\ ([0-9]+)\ inputs\ in\ ([0-9.]+)s ]]; then
        inputs=${BASH_REMATCH[1]}
        printf '%-18s %10s %12s  %s\n' "$name" "${BASH_REMATCH[2]}" "$inputs" ok
        result=0
    elif [[ $summary =~ failure\ after\ ([0-9]+)\ inputs ]]; then
        inputs=${BASH_REMATCH[1]}
        input=$(grep -m1 '^  input: ' "$log" | sed 's/^  input: //')
        printf '%-18s %10s %12s  %s\n' "$name" "-" "$inputs" "FAILED: $input (see $log)"
        result=1
        failed=1
    else
        inputs=0
        printf '%-18s %10s %12s  %s\n' "$name" "-" "-" "ERROR: no summary (see $log)"
        result=1
        failed=1
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$name" "$seconds" "$inputs" \
        "$result" "${seed:-}" >>fuzz/logs/runs.tsv
done
exit "$failed"
