"""SAGA: move 30 from account 1 to account 2, with compensations.

    python examples/saga.py [--dtm URL] [--fail]

A small Flask bank service (`bank_app` in _bank) runs in a thread on a loopback port the OS
picks, its balances in a throw-away SQLite database. Every branch runs through the
sub-transaction barrier, so a repeated call, a compensation whose action never arrived, or an
action arriving after its compensation does no harm. `--fail` makes TransIn answer FAILURE:
the server then runs the compensations and both balances are back where they started.
"""

from __future__ import annotations

import sys

from _bank import AMOUNT, bank_app, open_bank, parse_args, report, serve, wait_done

from dtm import DtmClient


def main() -> int:
    args = parse_args(__doc__, "make TransIn fail")
    db = open_bank()
    busi = f"{serve(bank_app(db, fail=args.fail))}/api"

    with DtmClient(args.dtm) as client:
        req = {"amount": AMOUNT}
        saga = client.saga(client.new_gid())
        saga.add(f"{busi}/TransOut", f"{busi}/TransOutCompensate", req)
        saga.add(f"{busi}/TransIn", f"{busi}/TransInCompensate", req)
        saga.submit()
        print(f"saga {saga.gid} submitted")
        status = wait_done(client, saga.gid)

    return report(db, status, fail=args.fail)


if __name__ == "__main__":
    sys.exit(main())
