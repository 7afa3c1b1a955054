#!/usr/bin/env python3
"""Runs a guardrails catalogue through real drivers and prints, per item, what
the client got, as JSON. Each item runs on a fresh connection:

  {"name": ..., "via": "text" | "prepared" | "init_db",
   "setup": [sql, ...],          # run first (text protocol), must succeed
   "sql": "...", "params": [...] # the attempt
  }

- text: PyMySQL with CLIENT.MULTI_STATEMENTS (the text is sent as is, comments
  and all); every result set of a multi-statement packet is read.
- prepared: mysql-connector (pure Python) with cursor(prepared=True): the binary
  protocol, COM_STMT_PREPARE then COM_STMT_EXECUTE.
- init_db: PyMySQL's select_db (COM_INIT_DB).

Output: [{"name", "ok", "error": [code, message] | null, "rows": n}, ...]

  python3 guardrails_catalogue.py --host H --port P --user U --password W --database D CATALOGUE.json
"""
import argparse
import json
import sys

import pymysql
from pymysql.constants import CLIENT


def text(a, item):
    conn = pymysql.connect(host=a.host, port=a.port, user=a.user, password=a.password,
                           database=a.database, charset="utf8mb4", autocommit=True,
                           client_flag=CLIENT.MULTI_STATEMENTS, read_timeout=30)
    try:
        with conn.cursor() as c:
            for s in item.get("setup", []):
                c.execute(s)
                while c.nextset():
                    pass
            if item.get("via") == "init_db":
                conn.select_db(item["sql"])
                return 0
            rows = 0
            c.execute(item["sql"], None)
            while True:
                rows += len(c.fetchall() or ())
                if not c.nextset():
                    break
            return rows
    finally:
        conn.close()


def prepared(a, item):
    import mysql.connector
    conn = mysql.connector.connect(host=a.host, port=a.port, user=a.user, password=a.password,
                                   database=a.database, use_pure=True, autocommit=True,
                                   ssl_disabled=True, connection_timeout=30)
    try:
        c = conn.cursor(prepared=True)
        c.execute(item["sql"], tuple(item.get("params", [])))
        rows = len(c.fetchall()) if c.with_rows else 0
        c.close()
        return rows
    finally:
        conn.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--database")
    p.add_argument("catalogue")
    a = p.parse_args()
    out = []
    for item in json.load(open(a.catalogue)):
        r = {"name": item["name"], "ok": False, "error": None, "rows": 0}
        try:
            if item.get("via") == "prepared":
                r["rows"] = prepared(a, item)
            else:
                r["rows"] = text(a, item)
            r["ok"] = True
        except Exception as e:  # driver errors carry (code, message)
            code = getattr(e, "errno", None)
            if code is None and getattr(e, "args", None) and isinstance(e.args[0], int):
                code = e.args[0]
            msg = getattr(e, "msg", None) or (e.args[1] if len(getattr(e, "args", ())) > 1 else str(e))
            r["error"] = [code, str(msg)]
        out.append(r)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
