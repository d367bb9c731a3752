#!/usr/bin/env bash
# Prune benchmark: an environment with BACKUPS backups of ~SIZE_MB MB of data, 1% of it
# changing between backups; then prune deletes the older half. Reports prune's wall
# time and peak memory (GNU time). Issue target: seconds, not minutes, and memory in
# proportion to the number of chunks, not to the data.
#
#   bash benches/prune.sh                  # 100 backups of 200 MB
#   BACKUPS=20 SIZE_MB=50 bash benches/prune.sh
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/.." && pwd)
backups=${BACKUPS:-100}
size_mb=${SIZE_MB:-200}
work=$(mktemp -d /tmp/envsnap-prune.XXXXXX)
trap 'rm -rf "$work"' EXIT

command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
(cd "$repo_root" && cargo build --release --quiet --example envsnap-engine)
engine="$repo_root/target/release/examples/envsnap-engine"

# SIZE_MB files of 1 MiB of random data: every file is its own chunk or two.
mkdir -p "$work/data"
for i in $(seq "$size_mb"); do head -c 1048576 /dev/urandom > "$work/data/f$i"; done
"$engine" init "$work/repo"
churn=$(( size_mb / 100 > 0 ? size_mb / 100 : 1 ))
echo "making $backups backups of $size_mb MB, $churn MB changing between them..."
for b in $(seq "$backups"); do
    for _ in $(seq "$churn"); do
        head -c 1048576 /dev/urandom > "$work/data/f$(( (RANDOM % size_mb) + 1 ))"
    done
    "$engine" backup "$work/repo" --state "$work/state" --env bench --tree data="$work/data" >/dev/null
done
before=$(du -sb "$work/repo" | cut -f1)
half=$(( backups / 2 ))
echo "pruning the $half oldest backups..."
/usr/bin/time -f "prune: %e s wall, %M KiB peak RSS" \
    "$engine" prune "$work/repo" --state "$work/state" --env bench --delete-oldest "$half"
after=$(du -sb "$work/repo" | cut -f1)
echo "repository: $((before / 1048576)) MiB -> $((after / 1048576)) MiB"
