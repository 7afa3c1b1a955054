#!/usr/bin/env python3
"""Runs a masking catalogue through PyMySQL (text protocol) and prints what the
client received, one entry per item, as JSON. Each item is a list of statements
run in order on one connection; every result set and error message is kept.

  python3 masking_catalogue.py --host H --port P --user U --password W --database D CATALOGUE.json
"""
import argparse
import json
import sys

import pymysql


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--database")
    p.add_argument("catalogue")
    a = p.parse_args()
    items = json.load(open(a.catalogue))
    out = []
    for stmts in items:
        conn = pymysql.connect(host=a.host, port=a.port, user=a.user, password=a.password,
                               database=a.database, charset="utf8mb4", autocommit=True,
                               client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
        got = []
        with conn.cursor() as c:
            for sql in stmts:
                try:
                    c.execute(sql)
                    while True:
                        rows = c.fetchall()
                        got.append(repr(rows))
                        if not c.nextset():
                            break
                except pymysql.MySQLError as e:
                    got.append("ERROR %s" % (e.args,))
        conn.close()
        out.append(got)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
