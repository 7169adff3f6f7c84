#!/usr/bin/env bash
# The appliance's main job: the README's first command. Builds dwd and dw, then runs the demo
# appliance on file-backed drives in ./dw-demo (or --state-dir DIR): it prints the S3 endpoint
# and keys, the NBD export, the admin credentials and the API addresses, and writes the same
# to dw-demo/demo.json. Ctrl-C stops it; running it again reopens the same data.
# Extra arguments go to dwd (e.g. --s3-listen 127.0.0.1:9100; see `dwd --help`).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
start_dir=$(pwd)
cd "$DW_ROOT"

ensure_rust
ensure_packages build
log "building dwd and dw (release; the first build takes a while)"
cargo build --release --locked -p dw-daemon -p dw-cli
# A TPM for the demo's TPM2 key slot: an swtpm already listening on 127.0.0.1:2321 is used.
if [ -z "${DW_TPM_TCTI:-}" ] && command -v ss >/dev/null && ss -ltn 2>/dev/null | grep -q '127.0.0.1:2321 '; then
    export DW_TPM_TCTI="swtpm:host=127.0.0.1,port=2321"
    log "using the swtpm on 127.0.0.1:2321 for a TPM2 slot"
fi
cd "$start_dir"
log "starting the demo appliance (dwd --demo)"
exec "$DW_ROOT/target/release/dwd" --demo "$@"
