#!/usr/bin/env bash
# Release binaries, plus the man pages and shell completions envsnapctl generates
# from its own definition, into target/assets/ (where both packages' asset lists
# look). Used by build-deb.sh and build-rpm.sh.
set -euo pipefail

cd "$(dirname "$0")/.."
cargo build --release --bins
assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/completions" "$assets/bin"
# The release profile keeps debug info (for profiling); packages ship without it.
for bin in envsnapd envsnapctl; do
    strip --strip-debug -o "$assets/bin/$bin" "target/release/$bin"
done
target/release/envsnapctl man-pages "$assets/man"
gzip -9n "$assets"/man/*.1
target/release/envsnapctl completions bash >"$assets/completions/envsnapctl"
target/release/envsnapctl completions zsh >"$assets/completions/_envsnapctl"
target/release/envsnapctl completions fish >"$assets/completions/envsnapctl.fish"
