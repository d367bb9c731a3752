#!/usr/bin/env bash
# The randomized crash test (tests/e2e/crash_e2e.rs) at length: envsnapd killed
# with SIGKILL at a random moment of a random operation, TRIALS times (default 200).
#
#   bash benches/crash.sh                  # 200 trials, a random seed
#   bash benches/crash.sh 500              # 500 trials
#   SEED=0x1234 bash benches/crash.sh      # a given seed (printed by every run)
#   OPS=restore,prune bash benches/crash.sh 50   # only these operations
#   KEEP=1 bash benches/crash.sh           # keep the first failed trials' directories
#
# Runs the debug test binary (no release build). The whole output goes to $LOG
# (default target/crash-DATE.log); the script prints the seed, the measured
# operation times, per operation how the trials ended, and every failed trial, and
# exits non-zero if any trial failed.
set -euo pipefail

trials=${1:-200}
cd "$(dirname "$0")/.."
log=${LOG:-target/crash-$(date +%Y%m%d-%H%M%S).log}
export ENVSNAP_CRASH_TRIALS=$trials
if [ -n "${SEED:-}" ]; then export ENVSNAP_CRASH_SEED=$SEED; fi
if [ -n "${OPS:-}" ]; then export ENVSNAP_CRASH_OPS=$OPS; fi
if [ -n "${KEEP:-}" ]; then export ENVSNAP_CRASH_KEEP=1; fi

cargo test --test integration --no-run
echo "crash.sh: $trials trials, output in $log"
started=$(date +%s)
status=0
cargo test --test integration e2e::crash_e2e -- --nocapture --test-threads=1 >"$log" 2>&1 ||
    status=$?
elapsed=$(($(date +%s) - started))

grep -E '^crash (run|calibrated)' "$log" || true
results=$(grep -c '^crash result' "$log" || true)
echo "trials run: $results of $trials in ${elapsed}s"
echo
echo "per operation (outcome counts; failed = trials with a problem):"
grep '^crash summary' "$log" | sed 's/^crash summary /  /' || true
grep '^crash total' "$log" || true
failed=$(grep '^crash result.*FAILED' "$log" || true)
if [ -n "$failed" ]; then
    echo
    echo "failed trials:"
    echo "$failed"
fi
grep '^crash kept' "$log" || true
if [ "$status" -ne 0 ] && [ -z "$failed" ]; then
    echo
    echo "the test failed outside the trials; the end of $log:"
    tail -n 40 "$log"
fi
exit "$status"
