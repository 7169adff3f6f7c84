# Shared helpers for the appliance's scripts. Sourced, not run.
# shellcheck shell=bash

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run as root directly; otherwise through sudo when it exists.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "need root to run: $*"
    fi
}

# ensure_packages GROUP...: installs the packages of those groups from packages.txt that are
# missing. apt-get update runs only when something is missing, so a warm machine pays nothing.
ensure_packages() {
    local list="$DW_ROOT/appliance/scripts/packages.txt" missing=() group pkg want
    for want in "$@"; do
        while read -r group pkg; do
            [ -z "$group" ] && continue
            case "$group" in \#*) continue ;; esac
            [ "$group" = "$want" ] || continue
            dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
        done <"$list"
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
        log "installing system packages: ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# The Rust toolchain comes from rustup on these machines; Debian's cargo is too old for edition 2024.
ensure_rust() {
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
    command -v cargo >/dev/null || die "cargo not found: install Rust >= 1.95 with rustup (https://rustup.rs)"
    local v
    v=$(rustc --version | awk '{print $2}')
    case "$v" in
        1.9[5-9]* | 1.[1-9][0-9][0-9]* | [2-9].*) ;;
        *) die "rustc $v is too old: the workspace needs Rust >= 1.95 (rustup update stable)" ;;
    esac
}

DW_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export DW_ROOT
