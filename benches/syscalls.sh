#!/usr/bin/env bash
# System calls per restored file (issue 16): envsnap's engine and restic restore the
# same tree of small files into an empty directory under `strace -c -f`, and the
# counts are reported per restored file, in total and for the calls that follow the
# file count. A count, not a time: it does not depend on the machine's load.
#
#   bash benches/syscalls.sh                          # 5,000 files in 100 directories
#   SYSCALL_FILES=20000 BENCH_ENGINE=/path/to/envsnap-engine bash benches/syscalls.sh
#
# The tree also holds one of each other kind (a file of several chunks, a sparse
# file, a symlink, a hard link, a fifo, an empty file and directory), and both
# restores are compared with the source by ../shared/bench/tree-manifest.sh (or a
# plain `diff -r` when it is absent), so a count never comes from a wrong restore.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/envsnap-syscalls}
SYSCALL_FILES=${SYSCALL_FILES:-5000}
SYSCALL_DIRS=${SYSCALL_DIRS:-100}
BENCH_ENGINE=${BENCH_ENGINE:-}
MANIFEST=$REPO_ROOT/../shared/bench/tree-manifest.sh

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
for tool in strace restic python3; do
  command -v $tool >/dev/null || die "$tool is needed (apt-get install $tool)"
done

if [[ -z $BENCH_ENGINE ]]; then
  log "building the engine driver (cargo build --release --example envsnap-engine)"
  (cd "$REPO_ROOT" && cargo build --release --example envsnap-engine --quiet) ||
    die "building envsnap-engine failed"
  BENCH_ENGINE=$REPO_ROOT/target/release/examples/envsnap-engine
fi
[[ -x $BENCH_ENGINE ]] || die "no engine driver at $BENCH_ENGINE"

rm -rf "$BENCH_DIR" && mkdir -p "$BENCH_DIR"
cd "$BENCH_DIR"

log "making $SYSCALL_FILES files in $SYSCALL_DIRS directories"
python3 - "$SYSCALL_FILES" "$SYSCALL_DIRS" <<'EOF'
import os, random, sys
files, dirs = int(sys.argv[1]), int(sys.argv[2])
random.seed(1)
for i in range(files):
    d = f"src/d{i % dirs:04}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i}.txt", "wb") as out:
        out.write(os.urandom(random.randint(100, 20000)))
os.symlink("d0001/f1.txt", "src/link")
os.link("src/d0000/f0.txt", "src/hard")
os.mkfifo("src/fifo")
open("src/empty", "w").close()
os.makedirs("src/empty-dir/deeper")
with open("src/big", "wb") as out:
    out.write(os.urandom(9 << 20))
with open("src/sparse", "wb") as out:
    out.seek(50 << 20)
    out.write(b"end")
EOF

export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$BENCH_DIR/restic-repo
"$BENCH_ENGINE" init es-repo >/dev/null
"$BENCH_ENGINE" backup es-repo --state es-state --env bench --tree files=src >/dev/null
restic init -q && restic backup -q src >/dev/null

log "restoring under strace"
strace -c -f -o envsnap.strace "$BENCH_ENGINE" restore es-repo --state es-state --env bench \
  --part tree:files --into envsnap-out >/dev/null
strace -c -f -o restic.strace restic restore latest --target restic-out -q

same() {
  if [[ -f $MANIFEST ]]; then
    diff <(bash "$MANIFEST" src) <(bash "$MANIFEST" "$1") >/dev/null
  else
    diff -r --no-dereference src "$1" >/dev/null
  fi
}
same envsnap-out || die "envsnap's restore differs from the source"
same restic-out/src || die "restic's restore differs from the source"

# Every entry restored: files, directories, links, the fifo.
entries=$(find src -mindepth 1 | wc -l)
calls() { awk -v c="$2" '$NF == c { print $4 }' "$1"; }
row() {
  local name=$1 e r
  e=$(calls envsnap.strace "$name") r=$(calls restic.strace "$name")
  e=${e:-0} r=${r:-0}
  awk -v n="$name" -v e="$e" -v r="$r" -v k="$entries" \
    'BEGIN { printf "| %s | %d | %.2f | %d | %.2f |\n", n, e, e / k, r, r / k }'
}
{
  echo "System calls of a full restore of $entries entries ($(restic version | cut -d' ' -f1-2))"
  echo
  echo "| system call | envsnap | per entry | restic | per entry |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  for c in total openat close pwrite64 write fchmod fchmodat fchown fchownat utimensat \
    newfstatat fcntl renameat renameat2 mkdirat futex; do row "$c"; done
} | tee results.md
