#!/usr/bin/env bash
# The whole test suite: the README's second command; .ci/run calls it. Installs what it needs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$DW_ROOT"

ensure_rust
ensure_packages build test
# Tests that need root, loop devices or helper programs fail (instead of skipping) under CI.
export DW_REQUIRE_ALL_TESTS="${DW_REQUIRE_ALL_TESTS:-1}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log "cargo fmt --check"
cargo fmt --all -- --check

log "nix-instantiate --parse on every .nix file"
nix_files=$(git ls-files '*.nix' 2>/dev/null || find . -name '*.nix' -not -path './target*')
for f in $nix_files; do
    nix-instantiate --parse "$f" >/dev/null || die "$f does not parse"
done
echo "parsed $(echo "$nix_files" | grep -c . || true) nix files"

log "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo build (binaries the end-to-end tests run: dwd, dw, dw-probe, ...)"
cargo build --workspace --bins --locked

log "cargo test"
cargo test --workspace --locked
