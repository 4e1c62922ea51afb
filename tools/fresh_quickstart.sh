#!/usr/bin/env bash
# `make quickstart` as a new user gets it: a fresh clone of this repository's HEAD, an empty
# cargo registry, no pip cache, an empty ftx cache, and every system BLAS hidden
# (../shared/tools/no-system-blas.sh, a mount namespace; needs root or user namespaces).
# Prints the time of the install and of the `ftx quickstart` step. Usage: tools/fresh_quickstart.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
hide=${HIDE:-$repo/../shared/tools/no-system-blas.sh}
work=$(mktemp -d /tmp/ftx-fresh.XXXXXX)
git clone -q "$repo" "$work/clone"
mkdir -p "$work/cargo-home"
cp "${CARGO_HOME:-$HOME/.cargo}/config.toml" "$work/cargo-home/" 2>/dev/null || true
cd "$work/clone"
export CARGO_HOME=$work/cargo-home PIP_NO_CACHE_DIR=1 XDG_CACHE_HOME=$work/xdg
start=$(date +%s)
"$hide" make install > "$work/install.log" 2>&1
mid=$(date +%s)
"$hide" .venv/bin/ftx quickstart --out runs/quickstart 2>&1 | tee "$work/quickstart.log"
end=$(date +%s)
"$hide" .venv/bin/ftx doctor | tee "$work/doctor.log"
echo "install $((mid - start)) s, ftx quickstart $((end - mid)) s, make quickstart $((end - start)) s (logs: $work)"
