"""Workflow: the bank transfer as a plain Python function whose branches DTM records.

    python examples/workflow.py [--dtm URL] [--fail]

A small Flask bank service (saga.py's, `bank_app` in _bank) runs in a thread on a loopback
port the OS picks, its balances in a throw-away SQLite database, each branch behind the
sub-transaction barrier. The workflow
calls TransOut then TransIn, each with an `on_rollback` compensation. `--fail` makes TransIn
answer FAILURE: the workflow function raises `FailureError`, the compensations of the
branches that succeeded run in reverse (TransOutCompensate) and the failure is submitted.

Had this process died mid-way, the server would call `/workflow/callback`, which resumes the
workflow: recorded branch results are replayed instead of called again.
"""

from __future__ import annotations

import asyncio
import sys

from _bank import AMOUNT, bank_app, open_bank, parse_args, report, serve, wait_done_async
from flask import Flask, Response, request

from dtm import AsyncDtmClient, FailureError
from dtm.workflow import Phase2, Workflow, Workflows


def add_callback(app: Flask, workflows: Workflows, loop: asyncio.AbstractEventLoop) -> None:
    """The route through which the server resumes an unfinished workflow. `Workflows` lives
    on the main thread's event loop, so the call is handed over to it."""

    @app.post("/workflow/callback")
    def workflow_callback() -> Response:
        future = asyncio.run_coroutine_threadsafe(
            workflows.handle_callback_request(dict(request.args), request.get_data()), loop
        )
        status, body = future.result()
        return Response(body, status=status, mimetype="application/json")


async def run(dtm: str, *, fail: bool) -> int:
    db = open_bank()
    app = bank_app(db, fail=fail)
    root = serve(app)
    busi = f"{root}/api"
    async with (
        Workflows(dtm, callback_url=f"{root}/workflow/callback") as workflows,
        AsyncDtmClient(dtm) as client,
    ):
        add_callback(app, workflows, asyncio.get_running_loop())

        @workflows.register("transfer")
        async def transfer(wf: Workflow, data: bytes) -> bytes:
            req = {"amount": AMOUNT}

            async def undo_out(phase2: Phase2) -> None:
                await phase2.call(f"{busi}/TransOutCompensate", req)

            async def undo_in(phase2: Phase2) -> None:
                await phase2.call(f"{busi}/TransInCompensate", req)

            await wf.call(f"{busi}/TransOut", req, on_rollback=undo_out)  # branch "01"
            await wf.call(f"{busi}/TransIn", req, on_rollback=undo_in)  # branch "02"
            return b"transferred"

        gid = await client.new_gid()
        try:
            result = await workflows.execute("transfer", gid, b"")
            print(f"workflow {gid} finished: {result.decode()}")
        except FailureError as exc:
            print(f"workflow {gid} rolled back: {exc}")
        status = await wait_done_async(client, gid)

    return report(db, status, fail=fail)


def main() -> int:
    args = parse_args(__doc__, "make TransIn fail")
    return asyncio.run(run(args.dtm, fail=args.fail))


if __name__ == "__main__":
    sys.exit(main())
