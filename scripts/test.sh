#!/usr/bin/env bash
# Runs the whole Chaperone test suite against real parts: MariaDB, real clients
# (mariadb CLI, Python and Node drivers, sysbench), a real OIDC provider and a
# real S3-compatible store. Sets up what is missing first.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -p chaperone-proxy   # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-env.sh
# Keep build artifacts outside the clone so that fresh clones reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chaperone-target}"
if [ $# -gt 0 ]; then
  exec cargo test "$@"
fi
exec cargo test --workspace --all-targets --no-fail-fast
