"""The workload every store micro-benchmark drives: each caller creates a two-operation saga,
then finishes it in one save_progress, as the engine does for a saga that succeeds at once."""

from __future__ import annotations

import time

from dtm.protocol.consts import OP_ACTION, OP_COMPENSATE, PREPARED, SAGA, SUBMITTED, SUCCEED
from dtm.protocol.records import TransBranch, TransGlobal
from dtm.server.stores.base import BranchUpdate, Progress, Store

FINISH = Progress(branches=[BranchUpdate("01", OP_ACTION, SUCCEED)], status=SUCCEED)


async def one_transaction(store: Store, gid: str) -> None:
    trans = TransGlobal(gid=gid, trans_type=SAGA, status=SUBMITTED)
    ops = [
        TransBranch(gid=gid, url="http://busi/" + op, branch_id="01", op=op, status=PREPARED)
        for op in (OP_COMPENSATE, OP_ACTION)
    ]
    assert await store.create(trans, ops, next_cron_delay=10)
    assert await store.save_progress(gid, FINISH, expect_status=SUBMITTED)


async def worker(store: Store, name: int, deadline: float) -> int:
    done = 0
    while time.perf_counter() < deadline:
        await one_transaction(store, f"w{name}-{done}")
        done += 1
    return done
