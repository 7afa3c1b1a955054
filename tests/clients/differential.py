#!/usr/bin/env python3
"""Runs the queries of differential_queries.json with one Python driver and prints
everything the driver returned as canonical JSON: column descriptions, rows (values
tagged with their Python type), row counts, errors and SHOW WARNINGS after each
query. proxy/tests/differential.rs runs it directly against MariaDB and through
the gateway, and compares the two outputs.

  differential.py --driver connector-c --prepared --host ... --port ... --database db
"""

import json
import os

from common import arg_parser, connect, dec, enc, error_info, is_server_error


def describe(cursor):
    if not cursor.description:
        return None
    return [[str(x) for x in d] for d in cursor.description]


def one_result(cursor):
    if cursor.description:
        rows = cursor.fetchall()
        return {
            "columns": describe(cursor),
            "rows": [[enc(v) for v in row] for row in rows],
        }
    return {"rowcount": cursor.rowcount}


def run_query(conn, query, prepared):
    """Runs one query; returns its output and whether the connection is still usable."""
    sql = query["sql"]
    params = query.get("params")
    out = {"name": query["name"], "results": []}
    if prepared:
        cursor = conn.cursor(prepared=True)
    else:
        cursor = conn.cursor()
    try:
        if params is not None:
            cursor.execute(sql, tuple(dec(p) for p in params))
        else:
            cursor.execute(sql)
        while True:
            out["results"].append(one_result(cursor))
            if not query.get("multi") or not cursor.nextset():
                break
    except Exception as e:  # the error is part of the output
        out["error"] = error_info(e)
        if not is_server_error(out["error"][0]):
            out["error"].append(type(e).__name__)
    try:
        cursor.close()
    except Exception as e:
        out["close_error"] = error_info(e)
    try:
        warnings = conn.cursor()
        warnings.execute("SHOW WARNINGS")
        out["warnings"] = [[enc(v) for v in row] for row in warnings.fetchall()]
        warnings.close()
    except Exception as e:
        # The driver gave up on this connection (the same way directly and
        # through the gateway): go on with a new one.
        out["warnings_error"] = error_info(e) + [type(e).__name__]
        return out, False
    return out, True


def main():
    p = arg_parser(__doc__)
    p.add_argument("--prepared", action="store_true", help="server-side prepared statements (mysql-connector only)")
    args = p.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "differential_queries.json"), encoding="utf-8") as f:
        spec = json.load(f)
    conn = connect(args, multi=True)
    results = []
    for query in spec["queries"]:
        if args.prepared and query.get("multi"):
            continue
        if getattr(conn, "unread_result", False) or getattr(conn, "_unread_result", False):
            # mysql-connector's C extension keeps the rest of a failed binary
            # result unread: start over on a new connection.
            results.append({"reconnect_before": query["name"]})
            conn.close()
            conn = connect(args, multi=True)
        out, usable = run_query(conn, query, args.prepared)
        results.append(out)
        if not usable:
            try:
                conn.close()
            except Exception:
                pass
            conn = connect(args, multi=True)
    conn.close()
    print(json.dumps({"driver": args.driver, "prepared": args.prepared, "queries": results}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
