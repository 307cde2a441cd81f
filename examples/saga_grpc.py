"""SAGA over gRPC: the bank transfer with the server's gRPC API and a gRPC bank service.

    python examples/saga_grpc.py [--dtm HOST:PORT] [--fail]

The bank is a grpc.aio service on a loopback port the OS picks, its balances in a
throw-away SQLite database, each method behind the sub-transaction barrier, which it builds
from the call's metadata. Payloads are protobuf messages (a well-known type here, so the
example needs no generated code). `--fail` makes TransIn answer ABORTED (FAILURE): the
server runs the compensations and both balances are back where they started.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import grpc
import grpc.aio
from _bank import AMOUNT, open_bank, parse_args, report
from google.protobuf import empty_pb2, wrappers_pb2

from dtm import AsyncDtmClient, FailureError
from dtm.web.grpc import branch_barrier, dtm_branch

Context = grpc.aio.ServicerContext[wrappers_pb2.Int64Value, empty_pb2.Empty]


class Bank:
    """The service `bank.Bank`: four unary methods taking the amount."""

    def __init__(self, db: Path, *, fail: bool) -> None:
        self.db = db
        self.fail = fail

    def adjust(self, context: Context, account: int, delta: int) -> None:
        """Change a balance in the barrier's transaction (SQLite is quick enough to call
        from the event loop here; a real service would use a thread or an async driver)."""

        def change(conn: sqlite3.Connection) -> None:
            conn.execute("update account set balance = balance + ? where id = ?", (delta, account))

        conn = sqlite3.connect(self.db)
        try:
            branch_barrier(context).call(conn, change)
        finally:
            conn.close()

    @dtm_branch
    async def trans_out(self, req: wrappers_pb2.Int64Value, context: Context) -> empty_pb2.Empty:
        self.adjust(context, 1, -req.value)
        return empty_pb2.Empty()

    @dtm_branch
    async def trans_out_compensate(
        self, req: wrappers_pb2.Int64Value, context: Context
    ) -> empty_pb2.Empty:
        self.adjust(context, 1, req.value)
        return empty_pb2.Empty()

    @dtm_branch
    async def trans_in(self, req: wrappers_pb2.Int64Value, context: Context) -> empty_pb2.Empty:
        if self.fail:
            raise FailureError("TransIn refused (--fail)")  # ABORTED: the saga rolls back
        self.adjust(context, 2, req.value)
        return empty_pb2.Empty()

    @dtm_branch
    async def trans_in_compensate(
        self, req: wrappers_pb2.Int64Value, context: Context
    ) -> empty_pb2.Empty:
        self.adjust(context, 2, -req.value)
        return empty_pb2.Empty()

    def handler(self) -> grpc.GenericRpcHandler:
        methods = {
            "TransOut": self.trans_out,
            "TransOutCompensate": self.trans_out_compensate,
            "TransIn": self.trans_in,
            "TransInCompensate": self.trans_in_compensate,
        }
        return grpc.method_handlers_generic_handler(
            "bank.Bank",
            {
                name: grpc.unary_unary_rpc_method_handler(
                    fn,
                    request_deserializer=wrappers_pb2.Int64Value.FromString,
                    response_serializer=empty_pb2.Empty.SerializeToString,
                )
                for name, fn in methods.items()
            },
        )


async def run(dtm: str, *, fail: bool) -> int:
    db = open_bank()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Bank(db, fail=fail).handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    busi = f"127.0.0.1:{port}/bank.Bank"

    async with AsyncDtmClient(dtm) as client:
        req = wrappers_pb2.Int64Value(value=AMOUNT)
        # wait_result: submit answers once the saga has finished (or raises FailureError
        # once it has rolled back); DTM's gRPC API has no query to poll with.
        saga = client.saga(await client.new_gid(), wait_result=True)
        saga.add(f"{busi}/TransOut", f"{busi}/TransOutCompensate", req)
        saga.add(f"{busi}/TransIn", f"{busi}/TransInCompensate", req)
        try:
            await saga.submit()
            status = "succeed"
        except FailureError:
            status = "failed"
        print(f"saga {saga.gid} submitted over gRPC")

    await server.stop(None)
    return report(db, status, fail=fail)


def main() -> int:
    args = parse_args(__doc__, "make TransIn fail", dtm="localhost:36790")
    return asyncio.run(run(args.dtm, fail=args.fail))


if __name__ == "__main__":
    sys.exit(main())
