#!/usr/bin/env bash
# The appliance's main job: the README's first command. Builds what it needs and runs it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$DW_ROOT"

ensure_rust
ensure_packages build
log "building dw-probe"
cargo build --release --locked -p dw-probe
log "hardware inventory (dw-probe)"
exec ./target/release/dw-probe "$@"
