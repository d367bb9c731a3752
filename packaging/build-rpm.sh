#!/usr/bin/env bash
# Build the RPM package with cargo-generate-rpm (release build). Output:
# target/generate-rpm/envsnap-VERSION-1.ARCH.rpm. Extra arguments go to
# `cargo generate-rpm`.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! cargo generate-rpm --version >/dev/null 2>&1; then
    cargo install cargo-generate-rpm --locked
fi
packaging/assets.sh
cargo generate-rpm "$@"
