"""Logs in through the gateway with an OIDC token as the password
(mysql_clear_password over TLS) and prints what the session sees.

    python3 token_login.py --host H --port P --user TARGET --password "$TOKEN" --ssl-ca CA
Prints {"current_user": ..., "one": 1}.
"""

import json
import sys

from common import arg_parser, connect


def main():
    p = arg_parser(__doc__)
    p.add_argument("--ssl-ca", default=None, help="CA file to verify the gateway with")
    args = p.parse_args()
    conn = connect(args, ssl=args.ssl_ca or True)
    with conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER(), 1")
        user, one = cur.fetchone()
    conn.close()
    print(json.dumps({"current_user": user, "one": int(one)}))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the test reads the message
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
