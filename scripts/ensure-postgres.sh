#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 with trust
# authentication for the current user and a database `test` (the approvals
# store tests use it): installs, configures and starts it from Debian packages
# when missing and we have the rights.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
as_postgres() { as_root su postgres -s /bin/sh -c "$1"; }
up() { psql -h 127.0.0.1 -p 5432 -d test -Atc 'SELECT 1' >/dev/null 2>&1; }

command -v psql >/dev/null && up && exit 0

if ! command -v pg_ctlcluster >/dev/null; then
  echo "[postgres] installing postgresql from Debian packages" >&2
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null \
    || { echo "Cannot install PostgreSQL here. Run: sudo apt-get install postgresql" >&2; exit 1; }
fi
version=$(ls /etc/postgresql | sort -V | tail -1)
hba=/etc/postgresql/$version/main/pg_hba.conf
if ! as_root grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
  echo "[postgres] trust for 127.0.0.1 (a test machine only)" >&2
  as_root sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
fi
as_root pg_ctlcluster "$version" main start 2>/dev/null || as_root pg_ctlcluster "$version" main reload
me=$(id -un)
for _ in $(seq 1 30); do
  if as_postgres "psql -Atc 'SELECT 1'" >/dev/null 2>&1; then break; fi
  sleep 1
done
as_postgres "psql -Atc \"SELECT 1 FROM pg_roles WHERE rolname = '$me'\"" | grep -q 1 \
  || as_postgres "createuser --superuser '$me'"
as_postgres "psql -Atc \"SELECT 1 FROM pg_database WHERE datname = 'test'\"" | grep -q 1 \
  || as_postgres "createdb -O '$me' test"
up && exit 0
echo "PostgreSQL did not come up on 127.0.0.1:5432: check /var/log/postgresql/" >&2
exit 1
