"""Workflow: the app's own code drives the branches and records their results through
registerBranch; the server's part is to call the app back when a workflow was left
unfinished, so that it resumes (replaying the recorded results) and submits the outcome.

The call-back goes to the workflow's QueryPrepared URL with branch id `00` and op = the
workflow's name. Over HTTP its body is the workflow's data; over gRPC, as upstream, the data
wrapped in a `workflow.WorkflowData` message (the request of `workflow.Workflow/Execute`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib

import msgspec

from dtm.protocol import consts
from dtm.protocol.gen import wf_pb2
from dtm.server.calls import Outcome
from dtm.server.engine.run import TransRun


class _Custom(msgspec.Struct):
    name: str = ""
    data: str | None = None  # base64, as Go encodes []byte


async def process(run: TransRun) -> None:
    if run.status in consts.FINISHED:
        return
    custom = _Custom()
    if run.trans.custom_data:
        with contextlib.suppress(msgspec.DecodeError):
            custom = msgspec.json.decode(run.trans.custom_data, type=_Custom)
    try:
        payload = base64.b64decode(custom.data or "", validate=True)
    except binascii.Error:
        payload = (custom.data or "").encode()
    if run.trans.protocol == consts.PROTOCOL_GRPC:
        payload = wf_pb2.WorkflowData(Data=payload).SerializeToString()
    result = await run.call_url(
        run.trans.query_prepared, consts.CHECKBACK_BRANCH_ID, custom.name, payload
    )
    if result.outcome is not Outcome.SUCCESS:
        await run.retry_later(result, run.trans.query_prepared)
