"""The PyPI `dtmcli` client (1.7.7.0), unchanged, driving this server.

It is what Python users of upstream DTM have installed: its bodies carry
`"custom_data": null`, `"query_prepared": null`, `"protocol": null`, a list of
`passthrough_headers`, and it reads our answers with its own `check_result`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from dtmcli import msg, saga, tcc, utils

from tests.harness import FAILURE, DtmServer, Endpoints


def test_gen_gid(dtm: DtmServer) -> None:
    first = utils.gen_gid(dtm.api)
    second = utils.gen_gid(dtm.api)
    assert isinstance(first, str)
    assert first
    assert first != second


def test_saga_succeeds(dtm: DtmServer, busi: Endpoints) -> None:
    gid = utils.gen_gid(dtm.api)
    req = {"amount": 30}
    saga.Saga(dtm.api, gid).add(req, busi.url("TransOut"), busi.url("TransOutCompensate")).add(
        req, busi.url("TransIn"), busi.url("TransInCompensate")
    ).submit()

    found = dtm.wait_status(gid, "succeed")
    assert found["transaction"]["trans_type"] == "saga"
    for name, branch_id in (("TransOut", "01"), ("TransIn", "02")):
        (call,) = busi.calls(name)
        assert call.method == "POST"
        assert call.json() == req
        assert call.query == {
            "gid": gid,
            "trans_type": "saga",
            "branch_id": branch_id,
            "op": "action",
        }
    assert busi.calls("TransOutCompensate") == busi.calls("TransInCompensate") == []


def test_saga_rolls_back(dtm: DtmServer, busi: Endpoints) -> None:
    gid = utils.gen_gid(dtm.api)
    busi.program("TransIn", FAILURE)
    req = {"amount": 30}
    saga.Saga(dtm.api, gid).add(req, busi.url("TransOut"), busi.url("TransOutCompensate")).add(
        req, busi.url("TransIn"), busi.url("TransInCompensate")
    ).submit()

    found = dtm.wait_status(gid, "failed")
    assert "FAILURE" in found["transaction"]["rollback_reason"]
    (in_comp,) = busi.calls("TransInCompensate")
    (out_comp,) = busi.calls("TransOutCompensate")
    assert in_comp.at <= out_comp.at
    assert out_comp.query["op"] == "compensate"
    assert out_comp.json() == req


def transfer(busi: Endpoints, req: dict[str, int]) -> Callable[[tcc.Tcc], None]:
    """dtmcli's TCC body: Try TransOut then TransIn, each with its Confirm and Revert."""

    def branches(t: tcc.Tcc) -> None:
        for name in ("TransOut", "TransIn"):
            t.call_branch(
                req, busi.url(name), busi.url(f"{name}Confirm"), busi.url(f"{name}Revert")
            )

    return branches


def test_tcc_succeeds(dtm: DtmServer, busi: Endpoints) -> None:
    gid = utils.gen_gid(dtm.api)
    req = {"amount": 30}

    assert tcc.tcc_global_transaction(dtm.api, gid, transfer(busi, req)) == gid

    dtm.wait_status(gid, "succeed")
    for name, branch_id in (("TransOut", "01"), ("TransIn", "02")):
        (tried,) = busi.calls(name)
        assert tried.query["op"] == "try"
        (confirmed,) = busi.calls(f"{name}Confirm")
        assert confirmed.query == {
            "gid": gid,
            "trans_type": "tcc",
            "branch_id": branch_id,
            "op": "confirm",
        }
        assert json.loads(confirmed.body) == req
        assert busi.calls(f"{name}Revert") == []


def test_tcc_try_failure_cancels(
    dtm: DtmServer, busi: Endpoints, capsys: pytest.CaptureFixture[str]
) -> None:
    gid = utils.gen_gid(dtm.api)
    busi.program("TransIn", FAILURE)
    req = {"amount": 30}

    # dtmcli prints the try's error, then aborts and answers "".
    assert tcc.tcc_global_transaction(dtm.api, gid, transfer(busi, req)) == ""
    assert "DTMFailureError" in capsys.readouterr().err

    dtm.wait_status(gid, "failed")
    # Every registered branch is cancelled, the one whose try failed included.
    (in_cancel,) = busi.calls("TransInRevert")
    (out_cancel,) = busi.calls("TransOutRevert")
    assert in_cancel.at <= out_cancel.at
    assert out_cancel.query["op"] == "cancel"
    assert busi.calls("TransOutConfirm") == busi.calls("TransInConfirm") == []


def test_msg_prepare_then_submit(dtm: DtmServer, busi: Endpoints) -> None:
    gid = utils.gen_gid(dtm.api)
    req = {"amount": 30}
    m = msg.Msg(dtm.api, gid).add(req, busi.url("TransOut")).add(req, busi.url("TransIn"))
    m.prepare(busi.url("QueryPrepared"))

    prepared = dtm.query(gid)["transaction"]
    assert prepared["status"] == "prepared"
    assert prepared["query_prepared"] == busi.url("QueryPrepared")
    assert busi.calls("TransOut") == []

    m.submit()

    dtm.wait_status(gid, "succeed")
    for name, branch_id in (("TransOut", "01"), ("TransIn", "02")):
        (call,) = busi.calls(name)
        assert call.json() == req
        assert call.query == {
            "gid": gid,
            "trans_type": "msg",
            "branch_id": branch_id,
            "op": "action",
        }
    assert busi.calls("QueryPrepared") == []


def test_msg_left_prepared_is_checked_back(dtm: DtmServer, busi: Endpoints) -> None:
    gid = utils.gen_gid(dtm.api)
    req = {"amount": 30}
    msg.Msg(dtm.api, gid).add(req, busi.url("TransIn")).prepare(busi.url("QueryPrepared"))

    # The app went silent: after TimeoutToFail the server asks it, hears SUCCESS, sends.
    dtm.wait_status(gid, "succeed", timeout=15)
    (check,) = busi.calls("QueryPrepared")
    assert check.query == {"gid": gid, "trans_type": "msg", "branch_id": "00", "op": "msg"}
    (call,) = busi.calls("TransIn")
    assert call.json() == req


def test_msg_submit_without_prepare(dtm: DtmServer, busi: Endpoints) -> None:
    gid = utils.gen_gid(dtm.api)
    msg.Msg(dtm.api, gid).add({"amount": 30}, busi.url("TransIn")).submit()

    dtm.wait_status(gid, "succeed")
    assert len(busi.calls("TransIn")) == 1
