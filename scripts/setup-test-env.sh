#!/usr/bin/env bash
# Brings up everything the test suite talks to, on a fresh Debian/Ubuntu machine
# or an already prepared one (every step is idempotent and skips what is there):
#   - MariaDB server and client (started if not running), sysbench, haproxy, tmux
#   - PostgreSQL on 127.0.0.1:5432 with a `test` database (approvals store tests)
#   - Python client libraries (PyMySQL, mysql-connector-python, mysqlclient,
#     pyarrow, duckdb, moto) from tests/requirements.txt
#   - Chromium (Debian's) for the browser tests
#   - Node packages (mysql2, oidc-provider, playwright-core) from tests/clients/package.json
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- Debian packages --------------------------------------------------------
need_pkgs=()
command -v mariadb >/dev/null || need_pkgs+=(mariadb-client)
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need_pkgs+=(mariadb-server)
command -v sysbench >/dev/null || need_pkgs+=(sysbench)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need_pkgs+=(haproxy)
command -v tmux >/dev/null || need_pkgs+=(tmux)
command -v pkg-config >/dev/null || need_pkgs+=(pkg-config)
dpkg -s libmariadb-dev >/dev/null 2>&1 || need_pkgs+=(libmariadb-dev)
command -v node >/dev/null || need_pkgs+=(nodejs npm)
# The browser tests drive Debian's Chromium with playwright-core (no browser download).
[ -x /usr/bin/chromium ] || need_pkgs+=(chromium)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_pkgs[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# --- MariaDB ----------------------------------------------------------------
scripts/ensure-mariadb.sh
# Large-packet tests send 20 MiB values.
mariadb -h127.0.0.1 -P3306 -uroot -e "SET GLOBAL max_allowed_packet = 67108864; SET GLOBAL local_infile = 1" >/dev/null

# --- PostgreSQL (the approvals store's scaled-out backend) ------------------
scripts/ensure-postgres.sh

# --- Python clients ---------------------------------------------------------
if ! python3 -c 'import pymysql, mysql.connector, MySQLdb, pyarrow, duckdb, moto, kubernetes_validate' >/dev/null 2>&1; then
  log "installing Python test clients (tests/requirements.txt)"
  python3 -m pip install -q -r tests/requirements.txt
fi

# --- Node clients -----------------------------------------------------------
if [ ! -d tests/clients/node_modules ] || [ tests/clients/package.json -nt tests/clients/node_modules ]; then
  log "installing Node test clients (tests/clients/package.json)"
  (cd tests/clients && npm install --no-audit --no-fund --silent)
  touch tests/clients/node_modules
fi
log "test environment ready"
