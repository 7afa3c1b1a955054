"""Shared by the Python test clients: command-line options, connecting with each
driver, and a canonical JSON form of what a driver returns.

Every script takes `--host H --port P --user U --password PW [--database DB]`
and `--driver NAME`, prints one JSON document on stdout, and exits non-zero with
a message on stderr when a check fails (see proxy/tests/support/clients.rs).
"""

import argparse
import datetime
import decimal
import re
import sys

DRIVERS = ("pymysql", "mysqldb", "connector-c", "connector-pure")


def arg_parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3306)
    p.add_argument("--user", default="root")
    p.add_argument("--password", default="")
    p.add_argument("--database", default=None)
    p.add_argument("--driver", choices=DRIVERS, default="pymysql")
    return p


def connect(args, driver=None, multi=False, ssl=None, **extra):
    """A DB-API connection with the named driver. `multi` enables multi-statements;
    `ssl` is a CA file to verify the server with (or True: TLS, no verification)."""
    driver = driver or args.driver
    common = dict(host=args.host, port=args.port, user=args.user, charset="utf8mb4")
    if driver == "pymysql":
        import pymysql
        from pymysql.constants import CLIENT

        # binary_prefix: send bytes parameters as _binary'...' (not valid UTF-8).
        kw = dict(common, password=args.password, database=args.database, binary_prefix=True)
        kw.update(extra)
        if multi:
            kw["client_flag"] = CLIENT.MULTI_STATEMENTS | CLIENT.MULTI_RESULTS
        if ssl is True:
            kw["ssl"] = {"check_hostname": False, "verify_mode": 0}
        elif ssl:
            kw["ssl"] = {"ca": ssl, "check_hostname": False}
        return pymysql.connect(**kw)
    if driver == "mysqldb":
        import MySQLdb
        from MySQLdb.constants import CLIENT

        # binary_prefix: send bytes parameters as _binary'...' (not valid UTF-8).
        kw = dict(common, password=args.password, binary_prefix=True)
        kw.update(extra)
        if args.database:
            kw["database"] = args.database
        if multi:
            kw["client_flag"] = CLIENT.MULTI_STATEMENTS | CLIENT.MULTI_RESULTS
        if ssl is True:
            kw["ssl_mode"] = "REQUIRED"
        elif ssl:
            kw["ssl"] = {"ca": ssl}
        return MySQLdb.connect(**kw)
    import mysql.connector
    from mysql.connector.constants import ClientFlag

    kw = dict(common, password=args.password, use_pure=(driver == "connector-pure"), **extra)
    if args.database:
        kw["database"] = args.database
    if multi:
        kw["client_flags"] = [ClientFlag.MULTI_STATEMENTS, ClientFlag.MULTI_RESULTS]
    if ssl is True:
        kw["ssl_disabled"] = False
        kw["ssl_verify_cert"] = False
    elif ssl:
        kw["ssl_ca"] = ssl
        kw["ssl_verify_cert"] = True
    else:
        kw["ssl_disabled"] = True
    return mysql.connector.connect(**kw)


def error_info(e):
    """(code, message) of a driver's exception."""
    code = getattr(e, "errno", None)
    msg = getattr(e, "msg", None)
    if code is None and len(e.args) >= 2 and isinstance(e.args[0], int):
        code, msg = e.args[0], e.args[1]
    if msg is None:
        msg = str(e)
    # Object addresses differ from run to run.
    return [code, re.sub(r" at 0x[0-9a-f]+", " at 0x...", str(msg))]


def is_server_error(code):
    """MySQL server errors are 1000-1999 and 3000 up; 2000-2999 and the drivers'
    own (-1, None) are client-side, after which a connection may be unusable."""
    return isinstance(code, int) and (1000 <= code < 2000 or code >= 3000)


def enc(v):
    """A value as a tagged string, so that types survive the JSON comparison."""
    if v is None:
        return None
    if isinstance(v, bool):
        return f"bool:{v}"
    if isinstance(v, int):
        return f"int:{v}"
    if isinstance(v, float):
        return f"float:{v!r}"
    if isinstance(v, decimal.Decimal):
        return f"dec:{v}"
    if isinstance(v, (bytes, bytearray)):
        return f"hex:{bytes(v).hex()}"
    if isinstance(v, str):
        return f"str:{v}"
    if isinstance(v, datetime.datetime):
        return f"datetime:{v.isoformat()}"
    if isinstance(v, datetime.date):
        return f"date:{v.isoformat()}"
    if isinstance(v, datetime.timedelta):
        return f"timedelta:{v.days}:{v.seconds}:{v.microseconds}"
    if isinstance(v, datetime.time):
        return f"time:{v.isoformat()}"
    if isinstance(v, (set, frozenset)):
        return "set:" + ",".join(sorted(str(x) for x in v))
    return f"{type(v).__name__}:{v!r}"


def dec(tagged):
    """The Python value of a tagged parameter (see differential_queries.json)."""
    if tagged == "null":
        return None
    kind, _, text = tagged.partition(":")
    return {
        "int": int,
        "float": float,
        "dec": decimal.Decimal,
        "str": str,
        "hex": bytes.fromhex,
        "datetime": datetime.datetime.fromisoformat,
        "date": datetime.date.fromisoformat,
        "time": datetime.time.fromisoformat,
    }[kind](text)


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def check(cond, message):
    if not cond:
        fail(message)
