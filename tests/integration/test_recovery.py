"""Crash recovery and one processor per transaction, over real HTTP.

Each test owns its server, so it may SIGKILL it: nothing is flushed, nothing finishes.
What the design guarantees, and these tests hold it to: an acknowledged submit survives;
a branch result is saved before anything is done on the strength of it, so after a crash
only the call whose answer was lost is repeated; a transaction has one processor at a time;
a forced stop is final.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import requests

from tests.harness import ERROR, FAILURE, OK, DtmServer, Endpoints, slow


def saga(gid: str, busi: Endpoints, steps: int, **options: Any) -> dict[str, Any]:
    """A saga of `steps` steps whose endpoints are a1/c1, a2/c2, ..."""
    return {
        "gid": gid,
        "trans_type": "saga",
        "steps": [
            {"action": busi.url(f"a{i}"), "compensate": busi.url(f"c{i}")}
            for i in range(1, steps + 1)
        ],
        "payloads": [json.dumps({"step": i}) for i in range(1, steps + 1)],
        **options,
    }


def ok(resp: requests.Response) -> None:
    assert resp.status_code == 200, f"{resp.status_code}: {resp.text}"
    assert resp.json().get("dtm_result") == "SUCCESS", resp.text


def restart_after_kill(server: DtmServer) -> None:
    server.kill()
    server.start()


def test_kill_mid_saga_resumes_where_it_stopped(
    private_dtm: Callable[..., DtmServer], busi: Endpoints, gid: str
) -> None:
    server = private_dtm()
    busi.program("a2", slow(1.5), OK)
    ok(server.post("submit", saga(gid, busi, 3)))
    busi.wait_calls("a2", 1)

    restart_after_kill(server)  # while step 2's action is in flight

    server.wait_status(gid, "succeed", timeout=15)
    # Step 1's success was saved before step 2 started: it is never needed again.
    assert busi.count("a1") == 1
    # Step 2's answer was lost with the server: its action is called again.
    assert busi.count("a2") >= 2
    assert busi.count("a3") >= 1
    assert [busi.count(f"c{i}") for i in (1, 2, 3)] == [0, 0, 0]
    branches = server.query(gid)["branches"]
    assert [b["status"] for b in branches if b["op"] == "action"] == ["succeed"] * 3


def test_deferred_branch_saves_trade_writes_for_repeated_calls(
    private_dtm: Callable[..., DtmServer], busi: Endpoints, gid: str
) -> None:
    # UpdateBranchSync 0, as upstream's batching: step 1's success waits for the next write,
    # so a crash before it makes step 1 run again (the barrier makes that harmless).
    server = private_dtm(UpdateBranchSync=0)
    busi.program("a2", slow(1.5), OK)
    ok(server.post("submit", saga(gid, busi, 2)))
    busi.wait_calls("a2", 1)

    restart_after_kill(server)

    server.wait_status(gid, "succeed", timeout=15)
    assert busi.count("a1") == 2
    branches = server.query(gid)["branches"]
    assert [b["status"] for b in branches if b["op"] == "action"] == ["succeed"] * 2


def test_kill_right_after_submit_still_finishes(
    private_dtm: Callable[..., DtmServer], busi: Endpoints, gid: str
) -> None:
    server = private_dtm()
    busi.program("a1", slow(1.5), OK)
    ok(server.post("submit", saga(gid, busi, 2)))

    restart_after_kill(server)  # the submit was acknowledged: it must not be lost

    server.wait_status(gid, "succeed", timeout=15)
    assert busi.count("a1") >= 1
    assert busi.count("a2") == 1
    assert busi.count("c1") == busi.count("c2") == 0


def test_duplicate_submit_while_processing_starts_no_second_processor(
    private_dtm: Callable[..., DtmServer], busi: Endpoints, gid: str
) -> None:
    server = private_dtm()
    busi.program("a1", slow(1.5), OK)
    body = saga(gid, busi, 2)
    ok(server.post("submit", body))
    busi.wait_calls("a1", 1)

    ok(server.post("submit", body))

    server.wait_status(gid, "succeed", timeout=10)
    assert busi.count("a1") == 1
    assert busi.count("a2") == 1
    assert busi.count("c1") == busi.count("c2") == 0


def test_wait_result_answers_ongoing_then_the_saga_succeeds(
    private_dtm: Callable[..., DtmServer], busi: Endpoints, gid: str
) -> None:
    server = private_dtm()
    busi.program("a1", ERROR, OK)

    resp = server.post("submit", saga(gid, busi, 1, wait_result=True))

    assert resp.status_code == 425, resp.text
    assert resp.json()["dtm_result"] == "ONGOING"
    assert server.status(gid) == "submitted"
    server.wait_status(gid, "succeed", timeout=10)
    assert busi.count("a1") == 2
    assert busi.count("c1") == 0


def test_kill_during_compensation_still_compensates_everything(
    private_dtm: Callable[..., DtmServer], busi: Endpoints, gid: str
) -> None:
    server = private_dtm()
    busi.program("a2", FAILURE)
    busi.program("c1", slow(1.5), OK)
    ok(server.post("submit", saga(gid, busi, 3)))
    busi.wait_calls("c1", 1)

    restart_after_kill(server)  # while step 1's compensation is in flight

    found = server.wait_status(gid, "failed", timeout=15)
    assert "FAILURE" in found["transaction"]["rollback_reason"]
    assert busi.count("c2") >= 1, "the failed step is compensated too"
    assert busi.count("c1") >= 2, "the compensation whose answer was lost is repeated"
    assert busi.count("a1") == busi.count("a2") == 1
    assert busi.count("a3") == busi.count("c3") == 0
    status = {(b["branch_id"], b["op"]): b["status"] for b in found["branches"]}
    assert status[("01", "compensate")] == status[("02", "compensate")] == "succeed"


def test_force_stop_during_a_branch_call_is_final(
    private_dtm: Callable[..., DtmServer], busi: Endpoints, gid: str
) -> None:
    server = private_dtm()
    busi.program("a1", slow(1.5), OK)
    ok(server.post("submit", saga(gid, busi, 2)))
    busi.wait_calls("a1", 1)

    ok(server.post("forceStop", {"gid": gid}))
    assert server.status(gid) == "failed"

    # Past the end of the call, the processor's lease and a few recovery rounds.
    time.sleep(4)
    assert server.status(gid) == "failed"
    assert busi.count("a1") == 1
    assert busi.count("a2") == busi.count("c1") == busi.count("c2") == 0
    again = server.post("forceStop", {"gid": gid})
    assert again.status_code == 409, again.text


def test_wait_result_answers_success_and_failure(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    ok(dtm.post("submit", saga(f"{gid}-ok", busi, 2, wait_result=True)))
    assert dtm.status(f"{gid}-ok") == "succeed"

    busi.program("b2", FAILURE)
    body = saga(f"{gid}-no", busi, 2, wait_result=True)
    body["steps"][1]["action"] = busi.url("b2")
    resp = dtm.post("submit", body)
    assert resp.status_code == 409, resp.text
    assert resp.json()["dtm_result"] == "FAILURE"
    dtm.wait_status(f"{gid}-no", "failed")
