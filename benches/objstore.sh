#!/usr/bin/env bash
# envsnap vs restic vs rustic on an S3 store (issue 14): s3s-fs on loopback, first
# reached directly, then through the envsnap-netproxy example adding latency each way.
# First backup and full restore of compare.sh's data; envsnap runs as the daemon,
# driven by envsnapctl. See benches/README.md for the knobs and what is measured.
#
#   bash benches/objstore.sh                               # 0.5 GiB of files; 0 and 25 ms
#   OBJ_DELAYS=25 BENCH_GIB=0.2 bash benches/objstore.sh    # quick
#   ENVSNAP_BIN=target/release bash benches/objstore.sh    # prebuilt binaries, no build
set -euo pipefail

# ---------------------------------------------------------------- settings --
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/envsnap-objstore}
BENCH_GIB=${BENCH_GIB:-0.5}                     # size of the copied real files
BENCH_SQLITE_MB=${BENCH_SQLITE_MB:-200}         # size of the SQLite file
BENCH_SPARSE_GIB=${BENCH_SPARSE_GIB:-1}         # apparent size of the sparse file
BENCH_REBUILD=${BENCH_REBUILD:-0}               # rebuild the dataset even if present
BENCH_VERIFY=${BENCH_VERIFY:-1}                 # diff restored data (untimed)
BENCH_KEEP=${BENCH_KEEP:-0}                     # keep the run dir afterwards
BENCH_SETTLE=${BENCH_SETTLE:-30}                # seconds after a sync before each restore
BENCH_LOOP_GIB=${BENCH_LOOP_GIB:-16}            # run dir on a fresh ext4 of this size; 0: none
OBJ_DELAYS=${OBJ_DELAYS:-"0 25"}                # ms added each way; 0: no proxy
OBJ_TOOLS=${OBJ_TOOLS:-"envsnap restic rustic"}
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)

DATASET=$BENCH_DIR/dataset      # pristine data, built once and reused
RUN=$BENCH_DIR/run              # everything of one run; wiped at the start
SRC=$RUN/src                    # what the tools back up: tree/ and app.db
ROWS=$RUN/rows.tsv              # delay, tool, scenario, wall s, peak RSS KiB
RESULTS=$BENCH_DIR/results.md
S3_KEY=bench S3_SECRET=bench-secret

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
has_tool() { [[ " $OBJ_TOOLS " == *" $1 "* ]]; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # PORT WHAT
  local _
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done
  die "$2 did not listen on port $1"
}

for t in $OBJ_TOOLS; do
  case $t in envsnap|restic|rustic) ;; *) die "unknown tool '$t' in OBJ_TOOLS" ;; esac
done

# ----------------------------------------------------------- prerequisites --
need_pkgs=()
has_tool restic && ! command -v restic >/dev/null && need_pkgs+=(restic)
[[ -x /usr/bin/time ]] || need_pkgs+=(time)
command -v python3 >/dev/null || need_pkgs+=(python3)
if ((${#need_pkgs[@]})); then
  [[ $(id -u) == 0 ]] || die "missing ${need_pkgs[*]}; run as root or install them"
  log "installing ${need_pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_pkgs[@]}" >/dev/null ||
    { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_pkgs[@]}" >/dev/null; }
fi
export PATH=$PATH:$HOME/.cargo/bin
if has_tool rustic && ! command -v rustic >/dev/null; then
  log "installing rustic (cargo install rustic-rs --locked: a long build)"
  cargo install rustic-rs --locked >"$BENCH_DIR/rustic-install.log" 2>&1 ||
    die "cargo install rustic-rs failed (log: $BENCH_DIR/rustic-install.log)"
fi
command -v s3s-fs >/dev/null || die "s3s-fs is missing: cargo install s3s-fs@0.14.1 --features binary"

if [[ -n ${ENVSNAP_BIN:-} ]]; then
  BIN=$(cd "$ENVSNAP_BIN" && pwd)   # envsnapd, envsnapctl and envsnap-netproxy
else
  log "building release binaries (cargo build --release --bins --examples)"
  (cd "$REPO_ROOT" && cargo build --release --bins --examples >"$BENCH_DIR/cargo.log" 2>&1) ||
    { tail -n 30 "$BENCH_DIR/cargo.log" >&2; die "cargo build failed (log: $BENCH_DIR/cargo.log)"; }
  BIN=$REPO_ROOT/target/release
fi
PROXY=$BIN/envsnap-netproxy
[[ -x $PROXY ]] || PROXY=$BIN/examples/envsnap-netproxy
for b in "$BIN/envsnapd" "$BIN/envsnapctl" "$PROXY"; do [[ -x $b ]] || die "$b is missing"; done

# ------------------------------------------------------------ data, server --
# shellcheck source=benches/dataset.sh
source "$REPO_ROOT/benches/dataset.sh"
ensure_dataset
# The run dir is a fresh journaled ext4 on a loop device (BENCH_LOOP_GIB): every tool
# writes its restore there, away from the other files of this machine's disk, whose
# ext4 has no journal. Without one, creating files within minutes of deleting many
# (here: earlier runs, other processes' temp dirs) skips every recently freed inode
# (`recently_deleted` in the kernel's inode allocator): perf showed restores spending
# most of their time there, 2-3 times as long from one run to the next.
log "preparing run dir $RUN"
mountpoint -q "$RUN" && umount "$RUN"
rm -rf "$RUN"
mkdir -p "$RUN"
if ((BENCH_LOOP_GIB > 0)); then
  [[ $(id -u) == 0 ]] || die "a loop device needs root; BENCH_LOOP_GIB=0 runs on $BENCH_DIR's filesystem"
  rm -f "$BENCH_DIR/run.img"
  truncate -s "${BENCH_LOOP_GIB}G" "$BENCH_DIR/run.img"
  mkfs.ext4 -q -F "$BENCH_DIR/run.img"
  mount -o loop "$BENCH_DIR/run.img" "$RUN"
fi
mkdir -p "$RUN/s3"
: >"$ROWS"

pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ $BENCH_KEEP == 1 ]] && return
  mountpoint -q "$RUN" && umount "$RUN"
  rm -rf "$RUN" "$BENCH_DIR/run.img"
}
trap cleanup EXIT

S3_PORT=$(free_port)
mkdir -p "$RUN/s3/envsnap" "$RUN/s3/restic" "$RUN/s3/rustic"
s3s-fs --host 127.0.0.1 --port "$S3_PORT" --access-key "$S3_KEY" --secret-key "$S3_SECRET" \
  "$RUN/s3" >"$RUN/s3s-fs.log" 2>&1 &
pids+=($!)
wait_port "$S3_PORT" s3s-fs
export AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET AWS_REGION=us-east-1 \
  AWS_DEFAULT_REGION=us-east-1 AWS_ALLOW_HTTP=true AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false

# ------------------------------------------------------------- measurement --
# measure DELAY TOOL SCENARIO CMD...: CMD under /usr/bin/time after a sync; one row.
# envsnap's peak RSS is the daemon's (VmHWM, reset before the job), the others' their own.
measure() {
  local delay=$1 tool=$2 scenario=$3 wall rss; shift 3
  log "$delay ms: $tool: $scenario: $*"
  sync
  [[ $tool == envsnap ]] && echo 5 >"/proc/$DAEMON_PID/clear_refs"
  if ! /usr/bin/time -f '%e %M' -o "$RUN/time.out" "$@" >"$RUN/last.out" 2>"$RUN/last.err"; then
    tail -n 20 "$RUN/last.out" "$RUN/last.err" >&2
    die "$tool failed: $scenario at $delay ms"
  fi
  read -r wall rss <"$RUN/time.out"
  [[ $tool == envsnap ]] && rss=$(awk '/^VmHWM/ {print $2}' "/proc/$DAEMON_PID/status")
  printf '%s\t%s\t%s\t%s\t%s\n' "$delay" "$tool" "$scenario" "$wall" "$rss" >>"$ROWS"
}

# check_restore DIR: the restored tree/ and app.db equal the dataset's (untimed).
check_restore() {
  [[ $BENCH_VERIFY == 1 ]] || return 0
  if ! diff -r --no-dereference "$DATASET/tree" "$1/tree" >/dev/null ||
    ! cmp -s "$DATASET/app.db" "$1/app.db"; then
    die "the restore in $1 differs from the dataset"
  fi
}

ctl() { "$BIN/envsnapctl" --socket "$RUN/envsnap/envsnapd.sock" "$@"; }

# start_daemon PORT DELAY: envsnapd with environment `bench` (one mount: $SRC) on
# s3://envsnap/dDELAY, reached at PORT.
start_daemon() {
  rm -rf "$RUN/envsnap"
  mkdir -p "$RUN/envsnap"
  cat >"$RUN/envsnap/envsnap.toml" <<TOML
[daemon]
host = "bench"
socket = "$RUN/envsnap/envsnapd.sock"
state_dir = "$RUN/envsnap/state"
[store]
url = "s3://envsnap/d$2"
[environments.bench]
version = "1.0"
[environments.bench.mounts.data]
path = "$SRC"
TOML
  AWS_ENDPOINT=http://127.0.0.1:$1 "$BIN/envsnapd" --config "$RUN/envsnap/envsnap.toml" \
    >"$RUN/envsnapd-$2ms.log" 2>&1 &
  DAEMON_PID=$!
  pids+=("$DAEMON_PID")
  local _
  for _ in $(seq 300); do ctl status >/dev/null 2>&1 && return; sleep 0.1; done
  tail -n 20 "$RUN/envsnapd-$2ms.log" >&2
  die "envsnapd did not start"
}

# rustic's profile for the bucket at PORT, prefix dDELAY.
rustic_profile() {
  cat >"$RUN/rustic-$2.toml" <<TOML
[repository]
repository = "opendal:s3"
password = "bench"
cache-dir = "$RUN/rustic-cache-$2"
[repository.options]
bucket = "rustic"
root = "/d$2"
endpoint = "http://127.0.0.1:$1"
region = "us-east-1"
access_key_id = "$S3_KEY"
secret_access_key = "$S3_SECRET"
TOML
}

# backup DELAY PORT TOOL: the first backup of tree/ and app.db into an empty repository.
backup() {
  local delay=$1 port=$2 tool=$3
  case $tool in
    envsnap)
      start_daemon "$port" "$delay"
      measure "$delay" envsnap "first backup" "$BIN/envsnapctl" --socket "$RUN/envsnap/envsnapd.sock" \
        --json backup create bench --name first --wait
      ctl --json prune >/dev/null ;;   # waits out the prune each backup starts (untimed)
    restic)
      export RESTIC_REPOSITORY=s3:http://127.0.0.1:$port/restic/d$delay RESTIC_PASSWORD=bench \
        RESTIC_CACHE_DIR=$RUN/restic-cache-$delay
      restic init >/dev/null
      measure "$delay" restic "first backup" restic backup --quiet "$SRC/tree" "$SRC/app.db" ;;
    rustic)
      rustic_profile "$port" "$delay"
      rustic -P "$RUN/rustic-$delay" init >/dev/null 2>&1
      measure "$delay" rustic "first backup" rustic -P "$RUN/rustic-$delay" backup \
        --no-progress "$SRC/tree" "$SRC/app.db" ;;
  esac
}

# restore DELAY TOOL: the backup, restored in full into an empty directory (envsnap:
# into the environment's directory, moved aside and made again). Nothing is deleted
# until the round ends, and each restore waits for the disk to settle first.
restore() {
  local delay=$1 tool=$2 dir=$RUN/restore-$2 raw=$RUN/restore-$2.raw
  [[ $tool == envsnap ]] && { mv "$SRC" "$RUN/src.backed-up"; mkdir "$SRC"; }
  sync
  sleep "$BENCH_SETTLE"
  case $tool in
    envsnap)
      measure "$delay" envsnap "full restore" "$BIN/envsnapctl" --socket "$RUN/envsnap/envsnapd.sock" \
        --json restore bench first --yes --wait --no-safety-backup
      dir=$SRC ;;
    restic)
      measure "$delay" restic "full restore" restic restore latest --target "$raw" ;;
    rustic)
      measure "$delay" rustic "full restore" rustic -P "$RUN/rustic-$delay" restore \
        --no-progress latest "$raw" ;;
  esac
  if [[ $tool != envsnap ]]; then
    mkdir -p "$dir"
    mv "$raw$SRC/tree" "$raw$SRC/app.db" "$dir/"   # both restore under the source path
  fi
  check_restore "$dir"
}

# ---------------------------------------------------------------- scenarios --
for delay in $OBJ_DELAYS; do
  port=$S3_PORT
  if ((delay > 0)); then
    port=$(free_port)
    "$PROXY" --listen-port "$port" --upstream "$S3_PORT" --delay-ms "$delay" >"$RUN/proxy-$delay.log" 2>&1 &
    proxy_pid=$!
    pids+=("$proxy_pid")
    wait_port "$port" envsnap-netproxy
  fi
  log "$delay ms each way: a fresh copy of the data, page cache warmed"
  rm -rf "$SRC"
  cp -a --sparse=always "$DATASET" "$SRC"
  find "$SRC" -type f -exec cat {} + >/dev/null
  for t in $OBJ_TOOLS; do backup "$delay" "$port" "$t"; done
  for t in $OBJ_TOOLS; do restore "$delay" "$t"; done
  rm -rf "$RUN"/restore-* "$RUN/src.backed-up"
  if has_tool envsnap; then kill "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; fi
  if ((delay > 0)); then kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true; fi
  for t in $OBJ_TOOLS; do
    printf '%s\t%s\tstored\t%s\n' "$delay" "$t" "$(du -sb "$RUN/s3/$t/d$delay" | cut -f1)" >>"$RUN/stored.tsv"
  done
done

# ------------------------------------------------------------------ report --
DATA_BYTES=$(data_bytes "$DATASET")
render() {
  echo "# envsnap vs restic vs rustic on S3 (s3s-fs on loopback)"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), host: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM"
  echo "- data: $DATA_BYTES bytes of real data ($(find "$DATASET" -type f | wc -l) files; BENCH_GIB=$BENCH_GIB," \
       "SQLite ${BENCH_SQLITE_MB} MB, sparse file ${BENCH_SPARSE_GIB} GiB apparent); warm page cache"
  echo "- $(restic version 2>/dev/null | cut -d' ' -f1-2), $(rustic --version 2>/dev/null || echo 'rustic -')," \
       "envsnap $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  echo "| delay each way | scenario | tool | wall s | MB/s | peak RSS MiB | stored MiB | x restic | x rustic |"
  echo "|---:|---|---|---:|---:|---:|---:|---:|---:|"
  awk -F'\t' -v bytes="$DATA_BYTES" '
    FNR == NR { stored[$1 "/" $2] = $4; next }
    { n++; d[n]=$1; t[n]=$2; s[n]=$3; w[n]=$4; r[n]=$5; base[$1 "/" $3 "/" $2] = $4 }
    END {
      for (i = 1; i <= n; i++) {
        k = d[i] "/" s[i] "/"
        xr = base[k "restic"] > 0 ? sprintf("%.2f", w[i] / base[k "restic"]) : "-"
        xu = base[k "rustic"] > 0 ? sprintf("%.2f", w[i] / base[k "rustic"]) : "-"
        st = (s[i] == "first backup") ? sprintf("%.1f", stored[d[i] "/" t[i]] / 1048576) : "-"
        rate = w[i] > 0 ? bytes / 1e6 / w[i] : 0
        printf "| %s ms | %s | %s | %.2f | %.0f | %.0f | %s | %s | %s |\n",
               d[i], s[i], t[i], w[i], rate, r[i] / 1024, st, xr, xu
      }
    }' "$RUN/stored.tsv" "$ROWS"
  echo
  targets
}

# The targets of issue 14, met or not: with latency, envsnap at most 0.6x restic and
# 0.8x rustic in both scenarios; without, within compare.sh's local targets (first
# backup 0.6x restic, full restore 0.7x); envsnapd under 192 MiB.
targets() {
  awk -F'\t' '
    { w[$1 "/" $3 "/" $2] = $4; if ($2 == "envsnap") { rss[$1 "/" $3] = $5; keys[$1 "/" $3] = 1 } }
    function check(what, value, limit,    strict, met) {
      strict = what ~ /RSS/
      met = strict ? value < limit : value <= limit
      printf "- %s: %.2f (target %s %s): %s\n", what, value, strict ? "<" : "<=", limit,
             met ? "met" : "MISSED"
    }
    END {
      for (k in keys) {
        split(k, p, "/"); delay = p[1]; scenario = p[2]
        limit_restic = delay > 0 ? 0.6 : (scenario == "first backup" ? 0.6 : 0.7)
        if (w[k "/restic"] > 0) check(delay " ms, " scenario ", envsnap/restic", w[k "/envsnap"] / w[k "/restic"], limit_restic)
        if (delay > 0 && w[k "/rustic"] > 0) check(delay " ms, " scenario ", envsnap/rustic", w[k "/envsnap"] / w[k "/rustic"], 0.8)
        check(delay " ms, " scenario ", envsnapd peak RSS MiB", rss[k] / 1024, 192)
      }
    }' "$ROWS" | sort -n
}

render | tee "$RESULTS"
log "results written to $RESULTS"
