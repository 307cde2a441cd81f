"""Workflow: the app's own code drives the branches and records their results through
registerBranch; the server's part is to call the app back when a workflow was left
unfinished, so that it resumes (replaying the recorded results) and submits the outcome.
"""

from __future__ import annotations

import base64
import binascii
import contextlib

import msgspec

from dtm.protocol import consts
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
    result = await run.call_url(
        run.trans.query_prepared, consts.CHECKBACK_BRANCH_ID, custom.name, payload
    )
    if result.outcome is not Outcome.SUCCESS:
        await run.retry_later(result, run.trans.query_prepared)
