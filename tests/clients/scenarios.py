#!/usr/bin/env python3
"""Acceptance scenarios of the gateway with a Python driver. Each scenario checks
what the driver gets and exits non-zero with a message when a check fails; on
success it prints a JSON object with what the Rust test may check further (for
example the connection ids it used).

  scenarios.py --driver pymysql --host ... --port ... --database db roundtrip

Scenarios: roundtrip, blob, big_result, multi, procedure, errors_warnings,
transactions, kill_query, change_user, reset_connection, local_infile, tls.
"""

import datetime
import decimal
import hashlib
import json
import os
import tempfile
import threading
import time

from common import check, connect, error_info, fail

S = {}


def scenario(f):
    S[f.__name__] = f
    return f


def cursor_for(conn, args):
    return conn.cursor(prepared=True) if args.prepared else conn.cursor()


def one(conn, sql, params=None):
    cur = conn.cursor()
    cur.execute(sql, params)
    rows = cur.fetchall()
    cur.close()
    return rows


def thread_id(conn):
    """The connection id from the handshake (through the gateway: the gateway's)."""
    if hasattr(conn, "thread_id") and callable(conn.thread_id):
        return conn.thread_id()
    return conn.connection_id


# Values of every type family, written with parameters and read back.
ROUNDTRIP_COLUMNS = [
    ("ti", "TINYINT", -128),
    ("tiu", "TINYINT UNSIGNED", 255),
    ("si", "SMALLINT", -32768),
    ("iu", "INT UNSIGNED", 4294967295),
    ("bi", "BIGINT", -9223372036854775808),
    ("biu", "BIGINT UNSIGNED", 18446744073709551615),
    ("dc", "DECIMAL(30,10)", decimal.Decimal("-12345678901234567890.0123456789")),
    ("fl", "FLOAT", 0.5),
    ("db", "DOUBLE", -1.2345678901234567e-300),
    ("dt", "DATE", datetime.date(2024, 2, 29)),
    ("dtm", "DATETIME(6)", datetime.datetime(2024, 2, 29, 13, 5, 9, 123456)),
    ("ts", "TIMESTAMP(6) NULL", datetime.datetime(2030, 1, 2, 3, 4, 5, 600000)),
    ("tm", "TIME", datetime.timedelta(hours=838, minutes=59, seconds=58)),
    ("ch", "CHAR(8)", "é😀"),
    ("vc", "VARCHAR(200)", "emoji 😀🎉 ünïcödé 漢字 'quotes' \\ back"),
    ("tx", "MEDIUMTEXT", "x" * 70000 + "😀"),
    ("bl", "BLOB", bytes(range(256)) * 3),
    ("js", "JSON", '{"a": [1, 2.5, null], "é": "😀"}'),
    ("en", "ENUM('red','green')", "green"),
    ("st", "SET('a','b','c')", "a,c"),
    ("nl", "INT NULL", None),
]


def normalize(name, v):
    if isinstance(v, (bytearray, memoryview)):
        v = bytes(v)
    if name == "st" and isinstance(v, (set, frozenset)):
        v = ",".join(sorted(v))
    if name == "fl" and v is not None:
        v = float(v)
    if name == "tm" and isinstance(v, datetime.time):
        v = datetime.timedelta(hours=v.hour, minutes=v.minute, seconds=v.second, microseconds=v.microsecond)
    if isinstance(v, str) and name in ("bl",):
        v = v.encode("latin-1")
    return v


@scenario
def roundtrip(args):
    conn = connect(args)
    cols = ", ".join(f"{n} {t}" for n, t, _ in ROUNDTRIP_COLUMNS)
    table = f"rt_{args.driver.replace('-', '_')}_{'ps' if args.prepared else 'text'}"
    cur = conn.cursor()
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, {cols}, bt BIT(10), g POINT) CHARACTER SET utf8mb4")
    names = [n for n, _, _ in ROUNDTRIP_COLUMNS]
    values = [v for _, _, v in ROUNDTRIP_COLUMNS]
    marks = ", ".join(["%s"] * (len(names) + 1))
    ins = cursor_for(conn, args)
    ins.execute(f"INSERT INTO {table} (id, {', '.join(names)}) VALUES ({marks})", [1] + values)
    check(ins.rowcount == 1, f"insert rowcount {ins.rowcount}")
    cur.execute(f"UPDATE {table} SET bt = b'1010101010', g = ST_GeomFromText('POINT(1.5 -2.25)') WHERE id = 1")
    conn.commit()
    sel = cursor_for(conn, args)
    sel.execute(f"SELECT {', '.join(names)}, bt + 0, ST_AsText(g) FROM {table} WHERE id = %s", (1,))
    row = sel.fetchall()
    check(len(row) == 1, f"expected one row, got {len(row)}")
    row = row[0]
    for (name, _, want), got in zip(ROUNDTRIP_COLUMNS, row):
        got = normalize(name, got)
        if name == "js" and got is not None:
            check(json.loads(got) == json.loads(want), f"{name}: {got!r} != {want!r}")
            continue
        check(got == want, f"{name}: read back {got!r}, wrote {want!r}")
    check(int(row[-2]) == 0b1010101010, f"bit: {row[-2]!r}")
    wkt = row[-1].decode() if isinstance(row[-1], (bytes, bytearray)) else row[-1]
    check(wkt == "POINT(1.5 -2.25)", f"geometry: {wkt!r}")
    conn.close()
    return {"columns": len(ROUNDTRIP_COLUMNS) + 2}


@scenario
def blob(args):
    """A 20 MiB BLOB both ways (multi-packet payloads: 16 MiB and more)."""
    size = 20 * 1024 * 1024
    data = os.urandom(1024) * (size // 1024)
    conn = connect(args)
    cur = conn.cursor()
    table = f"blob_{args.driver.replace('-', '_')}_{'ps' if args.prepared else 'text'}"
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, b LONGBLOB)")
    ins = cursor_for(conn, args)
    ins.execute(f"INSERT INTO {table} VALUES (%s, %s)", (1, data))
    conn.commit()
    sel = cursor_for(conn, args)
    # The blob first: its row starts with a length prefix 0xFE, like an EOF packet.
    sel.execute(f"SELECT b, LENGTH(b), SHA2(b, 256) FROM {table} WHERE id = 1")
    b, n, sha = sel.fetchall()[0]
    b = bytes(b)
    check(n == size, f"server has {n} bytes, sent {size}")
    sha = sha.decode() if isinstance(sha, (bytes, bytearray)) else sha
    check(sha == hashlib.sha256(data).hexdigest(), "the server's SHA-256 differs from what was sent")
    check(len(b) == size and b == data, f"read back {len(b)} bytes that differ from what was sent")
    conn.close()
    return {"bytes": size}


@scenario
def big_result(args):
    """200,000 rows in one result set."""
    conn = connect(args)
    cur = cursor_for(conn, args)
    cur.execute("SELECT seq, CONCAT('row-', seq), seq * 0.5 FROM seq_1_to_200000")
    count = 0
    total = 0
    last = None
    for row in cur.fetchall():
        count += 1
        total += int(row[0])
        last = row
    check(count == 200000, f"{count} rows")
    check(total == 200000 * 200001 // 2, f"sum {total}")
    check(last[1] == "row-200000", f"last row {last!r}")
    check(one(conn, "SELECT 1")[0][0] == 1, "connection unusable after the big result")
    conn.close()
    return {"rows": count}


@scenario
def multi(args):
    conn = connect(args, multi=True)
    cur = conn.cursor()
    cur.execute("CREATE TEMPORARY TABLE m (id INT); INSERT INTO m VALUES (1), (2); SELECT COUNT(*) FROM m; SELECT 'a' AS x UNION SELECT 'b'")
    shapes = []
    while True:
        shapes.append(cur.fetchall() if cur.description else cur.rowcount)
        if not cur.nextset():
            break
    check(len(shapes) == 4, f"4 results expected: {shapes!r}")
    check(shapes[1] == 2, f"insert affected {shapes[1]!r}")
    check(shapes[2][0][0] == 2, f"count {shapes[2]!r}")
    check([r[0] for r in shapes[3]] == ["a", "b"], f"union {shapes[3]!r}")
    cur.close()
    check(one(conn, "SELECT 7")[0][0] == 7, "connection unusable after multi-results")
    conn.close()
    return {"results": len(shapes)}


@scenario
def procedure(args):
    conn = connect(args, multi=True)
    cur = conn.cursor()
    cur.execute("DROP PROCEDURE IF EXISTS p_out")
    cur.execute(
        "CREATE PROCEDURE p_out(IN n INT, OUT doubled INT, INOUT note VARCHAR(40)) "
        "BEGIN SELECT seq FROM seq_1_to_3 WHERE seq <= n; SELECT 'second' AS s, n AS n; "
        "SET doubled = n * 2; SET note = CONCAT(note, '😀'); END"
    )
    sets = []
    if args.driver.startswith("connector"):
        out = cur.callproc("p_out", (3, 0, "hi"))
        for result in cur.stored_results():
            sets.append(result.fetchall())
        doubled, note = out[1], out[2]
    else:
        cur.callproc("p_out", (3, 0, "hi"))
        while True:
            if cur.description:
                sets.append(cur.fetchall())
            if not cur.nextset():
                break
        cur.execute("SELECT @_p_out_1, @_p_out_2")
        doubled, note = cur.fetchall()[0]
    if isinstance(note, (bytes, bytearray)):
        note = note.decode()
    check(len(sets) == 2, f"two result sets expected: {sets!r}")
    check([int(r[0]) for r in sets[0]] == [1, 2, 3], f"first set {sets[0]!r}")
    check(doubled == 6 and note == "hi😀", f"OUT parameters: {doubled!r}, {note!r}")
    check(one(conn, "SELECT 8")[0][0] == 8, "connection unusable after CALL")
    conn.close()
    return {"result_sets": len(sets)}


@scenario
def errors_warnings(args):
    conn = connect(args)
    try:
        one(conn, "SELECT * FROM table_that_does_not_exist")
        fail("no error for a missing table")
    except Exception as e:
        code, msg = error_info(e)
        check(code == 1146 and "table_that_does_not_exist" in msg, f"error {code} {msg}")
    try:
        one(conn, "SELEC 1")
        fail("no error for bad syntax")
    except Exception as e:
        check(error_info(e)[0] == 1064, f"error {error_info(e)}")
    cur = conn.cursor()
    cur.execute("SELECT CAST('abc' AS SIGNED), CAST('9x' AS SIGNED)")
    cur.fetchall()
    cur.execute("SHOW WARNINGS")
    warnings = cur.fetchall()
    check(len(warnings) == 2 and all(int(w[1]) == 1292 for w in warnings), f"warnings {warnings!r}")
    cur.execute("SHOW COUNT(*) WARNINGS")
    check(int(cur.fetchall()[0][0]) == 2, "warning count")
    check(one(conn, "SELECT 9")[0][0] == 9, "connection unusable after errors")
    conn.close()
    return {"warnings": len(warnings)}


@scenario
def transactions(args):
    conn = connect(args)
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS tx_t")
    cur.execute("CREATE TABLE tx_t (id INT PRIMARY KEY) ENGINE=InnoDB")
    conn.autocommit(False) if callable(getattr(conn, "autocommit", None)) else setattr(conn, "autocommit", False)
    cur.execute("INSERT INTO tx_t VALUES (1), (2)")
    conn.rollback()
    cur.execute("SELECT COUNT(*) FROM tx_t")
    check(cur.fetchall()[0][0] == 0, "rollback kept rows")
    cur.execute("INSERT INTO tx_t VALUES (3)")
    other = connect(args, autocommit=True)
    check(one(other, "SELECT COUNT(*) FROM tx_t")[0][0] == 0, "uncommitted row visible to another session")
    conn.commit()
    check(one(other, "SELECT COUNT(*) FROM tx_t")[0][0] == 1, "committed row not visible")
    cur.execute("START TRANSACTION")
    cur.execute("SELECT @@in_transaction")
    check(int(cur.fetchall()[0][0]) == 1, "not in a transaction after START TRANSACTION")
    cur.execute("SAVEPOINT s1")
    cur.execute("INSERT INTO tx_t VALUES (4)")
    cur.execute("ROLLBACK TO SAVEPOINT s1")
    cur.execute("COMMIT")
    check(one(other, "SELECT COUNT(*) FROM tx_t")[0][0] == 1, "savepoint rollback failed")
    other.close()
    conn.close()
    return {}


@scenario
def kill_query(args):
    """Connection A sleeps; connection B kills A's query with A's handshake id."""
    a = connect(args)
    b = connect(args)
    victim = thread_id(a)
    outcome = {}

    def sleeper():
        started = time.monotonic()
        try:
            outcome["rows"] = one(a, "SELECT SLEEP(20)")
        except Exception as e:
            outcome["error"] = error_info(e)
        outcome["seconds"] = time.monotonic() - started

    t = threading.Thread(target=sleeper)
    t.start()
    time.sleep(1.0)
    try:
        one(b, f"KILL QUERY {victim}")
    except Exception as e:
        t.join(25)
        fail(f"KILL QUERY {victim} failed with {error_info(e)}; the victim's query ended with {outcome!r}")
    t.join(15)
    check(not t.is_alive(), "the killed query did not return")
    check(outcome["seconds"] < 10, f"the query ran {outcome['seconds']:.1f}s after KILL QUERY")
    # MariaDB ends an interrupted SLEEP() with 1 (or error 1317).
    check(outcome.get("rows") == ((1,),) or outcome.get("rows") == [(1,)] or (outcome.get("error") or [0])[0] == 1317,
          f"unexpected outcome {outcome!r}")
    check(one(a, "SELECT 2")[0][0] == 2, "the victim's connection should survive KILL QUERY")
    try:
        one(b, "KILL QUERY 999999")
        fail("KILL of an unknown id succeeded")
    except Exception as e:
        check(error_info(e)[0] == 1094, f"unknown thread error {error_info(e)}")
    a.close()
    b.close()
    return {"victim": victim, "seconds": round(outcome["seconds"], 2)}


@scenario
def change_user(args):
    """COM_CHANGE_USER to another gateway user; a wrong password is refused."""
    import mysql.connector

    conn = connect(args)
    before = thread_id(conn)
    one(conn, "SET @marker = 'old session'")
    conn.cmd_change_user(username=args.new_user, password=args.new_password, database=args.database)
    check(one(conn, "SELECT @marker")[0][0] is None, "user variables survived the change of user")
    check(one(conn, "SELECT 5")[0][0] == 5, "unusable after change user")
    refused = None
    try:
        conn.cmd_change_user(username=args.new_user, password="wrong-password", database=args.database)
    except mysql.connector.Error as e:
        refused = error_info(e)
    check(refused is not None and refused[0] == 1045, f"wrong password not refused: {refused!r}")
    return {"connection_id": before, "refused": refused}


@scenario
def reset_connection(args):
    conn = connect(args)
    cur = conn.cursor()
    cur.execute("SET @v = 42")
    cur.execute("PREPARE s FROM 'SELECT 1'")
    cur.execute("CREATE TEMPORARY TABLE rc_tmp (x INT)")
    conn.cmd_reset_connection()
    cur = conn.cursor()
    cur.execute("SELECT @v")
    check(cur.fetchall()[0][0] is None, "user variable survived COM_RESET_CONNECTION")
    try:
        cur.execute("EXECUTE s")
        cur.fetchall()
        fail("prepared statement survived COM_RESET_CONNECTION")
    except mysql_error() as e:
        check(error_info(e)[0] == 1243, f"error {error_info(e)}")
    try:
        cur.execute("SELECT * FROM rc_tmp")
        cur.fetchall()
        fail("temporary table survived COM_RESET_CONNECTION")
    except mysql_error() as e:
        check(error_info(e)[0] == 1146, f"error {error_info(e)}")
    ps = conn.cursor(prepared=True)
    ps.execute("SELECT %s + 1", (41,))
    check(ps.fetchall()[0][0] == 42, "prepared statements unusable after reset")
    conn.close()
    return {}


def mysql_error():
    import mysql.connector

    return mysql.connector.Error


@scenario
def local_infile(args):
    """LOAD DATA LOCAL INFILE is refused with a clear message, nothing loaded."""
    fd, path = tempfile.mkstemp(suffix=".csv")
    os.write(fd, b"1,secret\n2,data\n")
    os.close(fd)
    extra = {"local_infile": True} if args.driver == "pymysql" else {}
    if args.driver == "mysqldb":
        extra = {"local_infile": 1}
    if args.driver.startswith("connector"):
        extra = {"allow_local_infile": True}
    conn = connect(args, **extra)
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS li_t")
    cur.execute("CREATE TABLE li_t (id INT, v VARCHAR(20))")
    err = None
    try:
        cur.execute(f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE li_t FIELDS TERMINATED BY ','")
    except Exception as e:
        err = error_info(e)
    os.unlink(path)
    check(err is not None, "LOAD DATA LOCAL INFILE was not refused")
    cur = conn.cursor()
    cur.execute("SELECT COUNT(*) FROM li_t")
    check(cur.fetchall()[0][0] == 0, "rows were loaded")
    conn.close()
    return {"error": err}


@scenario
def tls(args):
    """TLS with the gateway's certificate verified against its CA."""
    conn = connect(args, ssl=args.ca or True)
    check(one(conn, "SELECT 'over tls'")[0][0] == "over tls", "query over TLS")
    tid = thread_id(conn)
    conn.close()
    return {"connection_id": tid}


def main():
    from common import arg_parser

    p = arg_parser(__doc__)
    p.add_argument("--prepared", action="store_true", help="server-side prepared statements (mysql-connector)")
    p.add_argument("--new-user", default=None, help="change_user: the user to change to")
    p.add_argument("--new-password", default=None)
    p.add_argument("--ca", default=None, help="tls: CA file of the server's certificate")
    p.add_argument("scenario", choices=sorted(S))
    args = p.parse_args()
    result = S[args.scenario](args) or {}
    print(json.dumps({"scenario": args.scenario, "driver": args.driver, **result}, default=str))


if __name__ == "__main__":
    main()
