#!/usr/bin/env bash
# Build the Debian package with cargo-deb (release build). Output:
# target/debian/envsnap_VERSION-1_ARCH.deb. Extra arguments go to `cargo deb`.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    cargo install cargo-deb --locked
fi

# cargo-deb reads the unit from packaging/debian/envsnapd.service. In git that is a
# symlink to systemd/envsnapd.service; if it got lost (e.g. a checkout without
# symlink support), put a copy there so the package always ships the current unit.
unit=packaging/debian/envsnapd.service
if [[ ! -L "$unit" ]]; then
    cp systemd/envsnapd.service "$unit"
fi

packaging/assets.sh

cargo deb --no-build "$@"
