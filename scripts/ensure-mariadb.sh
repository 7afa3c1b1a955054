#!/usr/bin/env bash
# Makes sure a MariaDB server answers on 127.0.0.1:3306 as root without a password:
# installs it from Debian packages and starts it when missing and we have the rights.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
up() { mariadb -h127.0.0.1 -P3306 -uroot -e 'SELECT 1' >/dev/null 2>&1; }

command -v mariadb >/dev/null && up && exit 0

if ! command -v mariadb >/dev/null || [ ! -x /usr/sbin/mariadbd ]; then
  echo "[mariadb] installing mariadb-server and mariadb-client from Debian packages" >&2
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server mariadb-client >/dev/null \
    || { echo "Cannot install MariaDB here. Run: sudo apt-get install mariadb-server" >&2; exit 1; }
fi
echo "[mariadb] starting MariaDB on 127.0.0.1:3306" >&2
[ -d /var/lib/mysql/mysql ] || as_root mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
as_root mkdir -p /run/mysqld && as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql \
  || { echo "Cannot start MariaDB. Run: sudo service mariadb start" >&2; exit 1; }
for _ in $(seq 1 60); do
  up && exit 0
  # A fresh install lets root in over the socket only: allow it over TCP, no password.
  as_root mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket" >/dev/null 2>&1 || true
  sleep 1
done
echo "MariaDB did not come up on 127.0.0.1:3306: check /var/log/mysql/ or run 'sudo mariadbd --user=mysql'" >&2
exit 1
