#!/usr/bin/env bash
# Replay benchmark: records one session of N statements through `chaperone
# serve` (mariadb CLI, MariaDB at 127.0.0.1:3306), then measures
#  - replay start: `chaperone replay --plain` until the first statement is printed
#    (statements loaded, frames of the first one decoded),
#  - --against throughput: statements/s re-executed on a fresh database.
# Usage: benchmarks/replay.sh [N] [path/to/chaperone]   (numbers in benchmarks/README.md)
set -euo pipefail
N=${1:-20000}
BIN=${2:-${CARGO_TARGET_DIR:-target}/release/chaperone}
DIR=$(mktemp -d /tmp/chp_rep_bench.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
trap 'kill $GW 2>/dev/null || true; rm -rf "$DIR"; mariadb -h127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS chp_rep_bench; DROP DATABASE IF EXISTS chp_rep_bench_tgt"' EXIT
python3 -c 'print("44"*32)' > "$DIR/key"
cat > "$DIR/chaperone.toml" <<TOML
[gateway]
id = "bench-gw"
listen = "127.0.0.1:$PORT"
[targets.db]
address = "127.0.0.1:3306"
user = "root"
password = ""
[users.bench]
target = "db"
password = "bench-secret"
plugin = "mysql_native_password"
[archive]
store = "$DIR/archive"
spool_dir = "$DIR/spool"
segment_max_age_ms = 1000
signing_key_file = "$DIR/key"
TOML
mariadb -h127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS chp_rep_bench; CREATE DATABASE chp_rep_bench; DROP DATABASE IF EXISTS chp_rep_bench_tgt; CREATE DATABASE chp_rep_bench_tgt"
"$BIN" serve --config "$DIR/chaperone.toml" 2>"$DIR/gw.log" & GW=$!
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
python3 - "$N" > "$DIR/load.sql" <<'PY'
import sys
n = int(sys.argv[1])
print("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40));")
for i in range(1, n // 2):
    print(f"INSERT INTO t VALUES ({i}, 'value {i}');")
    print(f"SELECT id, v FROM t WHERE id = {i};")
PY
mariadb -h127.0.0.1 -P"$PORT" -ubench -pbench-secret chp_rep_bench < "$DIR/load.sql" > /dev/null
kill -TERM $GW; wait $GW || true
SESSION=$("$BIN" diff --agent bench --last 2 --archive "$DIR/archive" --json 2>&1 | sed -n 's/.*"session_a":"\([^"]*\)".*/\1/p' || true)
if [ -z "$SESSION" ]; then
  # Only one session: find it through the catalog.
  SESSION=$("$BIN" query --archive "$DIR/archive" --format csv "SELECT DISTINCT session_id FROM statements" | tail -1)
fi
echo "session $SESSION, $N statements"
START=$(date +%s.%N)
"$BIN" replay "$SESSION" --plain --archive "$DIR/archive" | head -n 2 > /dev/null
END=$(date +%s.%N)
echo "replay start (first statement printed): $(python3 -c "print(round(($END-$START)*1000))") ms"
"$BIN" replay "$SESSION" --archive "$DIR/archive" --against mysql://root@127.0.0.1:3306/chp_rep_bench_tgt > "$DIR/against.txt" || true
head -n 6 "$DIR/against.txt"; tail -n 1 "$DIR/against.txt"
