"""Finished transactions are purged after Store.FinishedDataExpire; unfinished never are."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.harness import ERROR, DtmServer, Endpoints


def saga(gid: str, busi: Endpoints, action: str) -> dict[str, object]:
    return {
        "gid": gid,
        "trans_type": "saga",
        "retry_interval": 1,
        "steps": [{"action": busi.url(action), "compensate": busi.url("c")}],
        "payloads": ["{}"],
    }


def test_finished_transactions_are_purged_and_unfinished_kept(
    private_dtm: Callable[..., DtmServer], busi: Endpoints, gid: str
) -> None:
    server = private_dtm(Store={"FinishedDataExpire": 1}, PurgeInterval=0.3)
    busi.program("broken", ERROR)
    assert server.post("submit", saga(f"{gid}-done", busi, "ok")).ok
    assert server.post("submit", saga(f"{gid}-stuck", busi, "broken")).ok
    server.wait_status(f"{gid}-done", "succeed")

    deadline = time.monotonic() + 10
    while server.query(f"{gid}-done")["transaction"] is not None:
        assert time.monotonic() < deadline, "the finished saga was never purged"
        time.sleep(0.1)
    stuck = server.query(f"{gid}-stuck")
    assert stuck["transaction"]["status"] == "submitted"
    assert len(stuck["branches"]) == 2
