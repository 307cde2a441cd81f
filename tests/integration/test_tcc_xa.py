"""TCC and XA over real HTTP, as upstream's clients drive them.

The client prepares the global transaction, registers each branch (the server stores its
second-phase operations) and calls the try / local-XA part itself; then it submits or
aborts, and the server calls every branch's confirm / commit or cancel / rollback until
each one succeeds.
"""

from __future__ import annotations

import json
from typing import Any

import requests

from tests.harness import ERROR, OK, ONGOING, DtmServer, Endpoints


def ok(resp: requests.Response) -> dict[str, Any]:
    assert resp.status_code == 200, f"{resp.status_code}: {resp.text}"
    body: dict[str, Any] = resp.json()
    assert body.get("dtm_result") == "SUCCESS", body
    return body


def prepare(dtm: DtmServer, gid: str, trans_type: str, **options: Any) -> None:
    ok(dtm.post("prepare", {"gid": gid, "trans_type": trans_type, **options}))


def register_tcc(
    dtm: DtmServer,
    gid: str,
    branch_id: str,
    *,
    data: str,
    confirm: str,
    cancel: str,
    route: str = "registerBranch",
) -> requests.Response:
    body = {
        "gid": gid,
        "trans_type": "tcc",
        "branch_id": branch_id,
        "data": data,
        "confirm": confirm,
        "cancel": cancel,
    }
    return dtm.post(route, body)


def tcc_branch(
    dtm: DtmServer, busi: Endpoints, gid: str, branch_id: str, data: dict[str, Any]
) -> None:
    """What a TCC client does for one branch: register it, then call its try itself."""
    payload = json.dumps(data)
    ok(
        register_tcc(
            dtm,
            gid,
            branch_id,
            data=payload,
            confirm=busi.url(f"confirm{branch_id}"),
            cancel=busi.url(f"cancel{branch_id}"),
        )
    )
    query = {"gid": gid, "trans_type": "tcc", "branch_id": branch_id, "op": "try"}
    resp = requests.post(busi.url(f"try{branch_id}"), params=query, data=payload, timeout=10)
    assert resp.status_code == 200


def register_xa(
    dtm: DtmServer, gid: str, branch_id: str, *, url: str, data: str = ""
) -> requests.Response:
    body = {"gid": gid, "trans_type": "xa", "branch_id": branch_id, "url": url, "data": data}
    return dtm.post("registerBranch", body)


# --- TCC --------------------------------------------------------------------------------


def test_tcc_submit_confirms_every_branch_last_registered_first(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    prepare(dtm, gid, "tcc")
    tcc_branch(dtm, busi, gid, "01", {"amount": 30})
    tcc_branch(dtm, busi, gid, "02", {"amount": 30})
    ok(dtm.post("submit", {"gid": gid, "trans_type": "tcc"}))

    dtm.wait_status(gid, "succeed")
    (first,) = busi.calls("confirm01")
    (second,) = busi.calls("confirm02")
    assert second.at < first.at, "the last registered branch is confirmed first"
    assert busi.calls("cancel01") == busi.calls("cancel02") == []
    assert dtm.branch_rows(gid) == [
        ("01", "cancel", "prepared"),
        ("01", "confirm", "succeed"),
        ("02", "cancel", "prepared"),
        ("02", "confirm", "succeed"),
    ]


def test_tcc_abort_cancels_every_branch_and_keeps_the_reason(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    prepare(dtm, gid, "tcc")
    tcc_branch(dtm, busi, gid, "01", {"amount": 30})
    tcc_branch(dtm, busi, gid, "02", {"amount": 30})
    body = {"gid": gid, "trans_type": "tcc", "rollback_reason": "try of 03 said FAILURE"}
    ok(dtm.post("abort", body))

    found = dtm.wait_status(gid, "failed")
    assert found["transaction"]["rollback_reason"] == "try of 03 said FAILURE"
    (first,) = busi.calls("cancel01")
    (second,) = busi.calls("cancel02")
    assert second.at < first.at, "the last registered branch is cancelled first"
    assert busi.calls("confirm01") == busi.calls("confirm02") == []
    assert dtm.branch_rows(gid) == [
        ("01", "cancel", "succeed"),
        ("01", "confirm", "prepared"),
        ("02", "cancel", "succeed"),
        ("02", "confirm", "prepared"),
    ]


def test_tcc_confirm_retried_until_it_succeeds(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    busi.program("confirm01", ERROR, ONGOING, OK)
    prepare(dtm, gid, "tcc")
    tcc_branch(dtm, busi, gid, "01", {"amount": 30})
    ok(dtm.post("submit", {"gid": gid, "trans_type": "tcc"}))

    busi.wait_calls("confirm01", 1)
    assert dtm.status(gid) == "submitted"
    dtm.wait_status(gid, "succeed", timeout=15)
    assert len(busi.calls("confirm01")) == 3
    assert busi.calls("cancel01") == []


def test_tcc_left_prepared_times_out_and_is_cancelled(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    prepare(dtm, gid, "tcc", timeout_to_fail=1)
    tcc_branch(dtm, busi, gid, "01", {"amount": 30})

    found = dtm.wait_status(gid, "failed", timeout=10)
    assert found["transaction"]["rollback_reason"] == "Timeout after 1 seconds"
    assert len(busi.calls("cancel01")) == 1
    assert busi.calls("confirm01") == []
    resp = dtm.post("submit", {"gid": gid, "trans_type": "tcc"})
    assert resp.status_code == 409
    assert resp.json()["dtm_result"] == "FAILURE"


def test_tcc_register_after_submit_is_refused(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    prepare(dtm, gid, "tcc")
    tcc_branch(dtm, busi, gid, "01", {"amount": 30})
    ok(dtm.post("submit", {"gid": gid, "trans_type": "tcc"}))

    late = register_tcc(
        dtm, gid, "02", data="{}", confirm=busi.url("confirm02"), cancel=busi.url("cancel02")
    )
    assert late.status_code == 409, late.text
    assert late.json()["dtm_result"] == "FAILURE"
    dtm.wait_status(gid, "succeed")
    assert busi.calls("confirm02") == []
    assert [b["branch_id"] for b in dtm.query(gid)["branches"]] == ["01", "01"]


def test_tcc_register_to_unknown_gid_is_refused(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    resp = register_tcc(
        dtm, gid, "01", data="{}", confirm=busi.url("confirm01"), cancel=busi.url("cancel01")
    )
    assert resp.status_code == 409, resp.text
    assert dtm.query(gid)["transaction"] is None


def test_tcc_old_register_alias(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    prepare(dtm, gid, "tcc")
    ok(
        register_tcc(
            dtm,
            gid,
            "01",
            data='{"amount":30}',
            confirm=busi.url("confirm01"),
            cancel=busi.url("cancel01"),
            route="registerTccBranch",
        )
    )
    ok(dtm.post("submit", {"gid": gid, "trans_type": "tcc"}))
    dtm.wait_status(gid, "succeed")
    assert len(busi.calls("confirm01")) == 1


def test_tcc_branch_call_carries_ids_and_data(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    data = json.dumps({"amount": 30, "user": "ü"})
    prepare(dtm, gid, "tcc")
    ok(register_tcc(dtm, gid, "01", data=data, confirm=busi.url("c"), cancel=busi.url("x")))
    ok(dtm.post("submit", {"gid": gid, "trans_type": "tcc"}))

    dtm.wait_status(gid, "succeed")
    (call,) = busi.calls("c")
    assert call.method == "POST"
    assert call.query == {"gid": gid, "trans_type": "tcc", "branch_id": "01", "op": "confirm"}
    assert call.body == data.encode()
    assert call.headers.get("Content-Type", "").startswith("application/json")


def test_tcc_branch_without_data_is_called_with_get(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    prepare(dtm, gid, "tcc")
    ok(register_tcc(dtm, gid, "01", data="", confirm=busi.url("c"), cancel=busi.url("x")))
    ok(dtm.post("abort", {"gid": gid, "trans_type": "tcc"}))

    dtm.wait_status(gid, "failed")
    (call,) = busi.calls("x")
    assert call.method == "GET"
    assert call.query == {"gid": gid, "trans_type": "tcc", "branch_id": "01", "op": "cancel"}
    assert call.body == b""


def test_tcc_branch_with_empty_urls_needs_no_call(dtm: DtmServer, gid: str) -> None:
    prepare(dtm, gid, "tcc")
    ok(register_tcc(dtm, gid, "01", data="{}", confirm="", cancel=""))
    ok(dtm.post("submit", {"gid": gid, "trans_type": "tcc"}))
    dtm.wait_status(gid, "succeed")


def test_tcc_without_branches_succeeds(dtm: DtmServer, gid: str) -> None:
    prepare(dtm, gid, "tcc")
    ok(dtm.post("submit", {"gid": gid, "trans_type": "tcc"}))
    dtm.wait_status(gid, "succeed")
    assert dtm.query(gid)["branches"] == []


def test_finished_tcc_cannot_be_aborted(dtm: DtmServer, gid: str) -> None:
    prepare(dtm, gid, "tcc")
    ok(dtm.post("submit", {"gid": gid, "trans_type": "tcc"}))
    dtm.wait_status(gid, "succeed")
    resp = dtm.post("abort", {"gid": gid, "trans_type": "tcc"})
    assert resp.status_code == 409
    assert resp.json()["dtm_result"] == "FAILURE"
    assert dtm.status(gid) == "succeed"


# --- XA ---------------------------------------------------------------------------------


def test_xa_submit_commits_every_branch(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    prepare(dtm, gid, "xa")
    ok(register_xa(dtm, gid, "01", url=busi.url("out")))
    ok(register_xa(dtm, gid, "02", url=busi.url("in"), data='{"amount":30}'))
    ok(dtm.post("submit", {"gid": gid, "trans_type": "xa"}))

    dtm.wait_status(gid, "succeed")
    (out,) = busi.calls("out")
    (in_,) = busi.calls("in")
    assert out.method == "POST", "upstream always POSTs to XA branches"
    assert out.body == b""
    assert out.query == {"gid": gid, "trans_type": "xa", "branch_id": "01", "op": "commit"}
    assert in_.method == "POST"
    assert in_.body == b'{"amount":30}'
    assert in_.query == {"gid": gid, "trans_type": "xa", "branch_id": "02", "op": "commit"}
    assert dtm.branch_rows(gid) == [
        ("01", "rollback", "prepared"),
        ("01", "commit", "succeed"),
        ("02", "rollback", "prepared"),
        ("02", "commit", "succeed"),
    ]


def test_xa_abort_rolls_back_every_branch(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    prepare(dtm, gid, "xa")
    ok(register_xa(dtm, gid, "01", url=busi.url("out")))
    ok(register_xa(dtm, gid, "02", url=busi.url("in")))
    ok(dtm.post("abort", {"gid": gid, "trans_type": "xa"}))

    dtm.wait_status(gid, "failed")
    for name, branch_id in (("out", "01"), ("in", "02")):
        (call,) = busi.calls(name)
        assert call.method == "POST"
        assert call.query == {
            "gid": gid,
            "trans_type": "xa",
            "branch_id": branch_id,
            "op": "rollback",
        }
    assert [s for _, _, s in dtm.branch_rows(gid)] == ["succeed", "prepared"] * 2


def test_xa_commit_retried_until_it_succeeds(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    busi.program("out", ONGOING, OK)
    prepare(dtm, gid, "xa")
    ok(register_xa(dtm, gid, "01", url=busi.url("out")))
    ok(dtm.post("submit", {"gid": gid, "trans_type": "xa"}))

    busi.wait_calls("out", 1)
    assert dtm.status(gid) == "submitted"
    dtm.wait_status(gid, "succeed", timeout=10)
    assert [c.query["op"] for c in busi.calls("out")] == ["commit", "commit"]


def test_xa_old_register_alias(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    prepare(dtm, gid, "xa")
    body = {"gid": gid, "trans_type": "xa", "branch_id": "01", "url": busi.url("out"), "data": ""}
    ok(dtm.post("registerXaBranch", body))
    ok(dtm.post("submit", {"gid": gid, "trans_type": "xa"}))
    dtm.wait_status(gid, "succeed")
    assert [c.query["op"] for c in busi.calls("out")] == ["commit"]


def test_xa_left_prepared_times_out_and_rolls_back(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    prepare(dtm, gid, "xa", timeout_to_fail=1)
    ok(register_xa(dtm, gid, "01", url=busi.url("out")))

    found = dtm.wait_status(gid, "failed", timeout=10)
    assert found["transaction"]["rollback_reason"] == "Timeout after 1 seconds"
    assert [c.query["op"] for c in busi.calls("out")] == ["rollback"]
