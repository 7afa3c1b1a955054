#!/usr/bin/env bash
# The first command of the README: builds Chaperone and runs `chaperone demo`,
# which starts the gateway on loopback against the MariaDB at 127.0.0.1:3306, runs a
# scripted agent session through it, and prints what to look at next.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "Chaperone needs a Rust toolchain: https://rustup.rs" >&2; exit 1; }
scripts/ensure-mariadb.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chaperone-target}"
echo "[demo] building chaperone (the first build takes several minutes)" >&2
cargo build --release --bin chaperone
exec "$CARGO_TARGET_DIR/release/chaperone" demo "$@"
