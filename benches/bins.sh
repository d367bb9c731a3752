# Sourced by the benchmarks that drive the release daemon (history.sh, lock.sh, postgres.sh,
# churn.sh, million.sh). Needs REPO_ROOT, log and die.

# release_bins [EXTRA...]: sets BIN to a directory holding release envsnapd and
# envsnapctl (and any EXTRA binaries named): ENVSNAP_BIN when set (no build), else a
# `cargo build --release --bins` of this checkout; CTL to its envsnapctl.
release_bins() {
  if [[ -n ${ENVSNAP_BIN:-} ]]; then
    BIN=$(cd "$ENVSNAP_BIN" && pwd)
  else
    log "building envsnapd and envsnapctl (cargo build --release --bins)"
    (cd "$REPO_ROOT" && cargo build --release --bins --quiet) || die "cargo build failed"
    BIN=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release
  fi
  local tool
  for tool in envsnapd envsnapctl "$@"; do
    [[ -x $BIN/$tool ]] || die "no $BIN/$tool"
  done
  CTL=$BIN/envsnapctl
}
