"""The sans-I/O core alone: request bodies, answer reading, branch ids, saga orders; and
that the sync and async APIs keep the same shape."""

from __future__ import annotations

import inspect
import json

import pytest

import dtm
import dtm.client
from dtm.client import _core
from dtm.client._core import BranchIdGen, HttpResponse, check_answer
from dtm.client._modes import SagaBuilder, new_trans
from dtm.errors import FailureError, OngoingError, TransportError


def test_facade_exports_exactly_all() -> None:
    """`__all__` names every public object of the facade and nothing else."""
    public = {
        name
        for name, value in vars(dtm).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert sorted(dtm.__all__) == sorted(public | {"__version__"})
    assert len(set(dtm.__all__)) == len(dtm.__all__)
    assert dtm.__version__
    client_public = {
        name
        for name, value in vars(dtm.client).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert sorted(dtm.client.__all__) == sorted(client_public)


def test_the_sdk_does_not_import_the_server() -> None:
    import subprocess
    import sys

    code = (
        "import sys, dtm, dtm.workflow, dtm.xa, dtm.xa.aio, dtm.web.grpc, dtm.barrier.aio, "
        "dtm.client._grpc; print(any(m.startswith('dtm.server') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("sync", "aio"),
    [
        (dtm.DtmClient, dtm.AsyncDtmClient),
        (dtm.Saga, dtm.AsyncSaga),
        (dtm.Msg, dtm.AsyncMsg),
        (dtm.Tcc, dtm.AsyncTcc),
        (dtm.Xa, dtm.AsyncXa),
    ],
)
def test_sync_and_async_have_the_same_shape(sync: type, aio: type) -> None:
    renamed = {"__aenter__": "__enter__", "__aexit__": "__exit__", "aclose": "close"}

    def shape(cls: type, rename: dict[str, str]) -> dict[str, list[str]]:
        return {
            rename.get(name, name): list(inspect.signature(member).parameters)
            for name, member in inspect.getmembers(cls, callable)
            if not name.startswith("_") or name in rename or name in {"__enter__", "__exit__"}
        }

    assert shape(sync, {}) == shape(aio, renamed)


def answer(status: int, body: object) -> HttpResponse:
    return HttpResponse(status, json.dumps(body).encode())


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (409, {"dtm_result": "FAILURE"}, FailureError),
        (200, {"dtm_result": "FAILURE"}, FailureError),
        (425, {"dtm_result": "ONGOING"}, OngoingError),
        (200, {"dtm_result": "ONGOING"}, OngoingError),
        (500, {"message": "broke"}, TransportError),
        (404, "not found", TransportError),
    ],
)
def test_answers_map_to_the_exception_tree(status: int, body: object, error: type) -> None:
    with pytest.raises(error):
        check_answer(answer(status, body), "submit")


def test_success_is_not_confused_by_a_message_that_mentions_failure() -> None:
    ok = answer(200, {"dtm_result": "SUCCESS", "message": "no FAILURE here"})
    assert check_answer(ok, "submit") is ok
    assert check_answer(HttpResponse(200, b"plain"), "try").text == "plain"


def test_branch_ids_follow_upstream() -> None:
    gen = BranchIdGen()
    assert [gen.next() for _ in range(3)] == ["01", "02", "03"]
    nested = BranchIdGen("02")
    assert nested.next() == "0201"
    for _ in range(98):
        nested.next()
    with pytest.raises(ValueError, match="99"):
        nested.next()


def body_of(saga: SagaBuilder) -> dict[str, object]:
    saga._trans.custom_data = saga._custom_data()
    decoded: dict[str, object] = json.loads(saga._trans.body())
    return decoded


def test_saga_body_is_upstreams_json() -> None:
    saga = SagaBuilder(new_trans("http://d/api/dtmsvr", "g", "saga", retry_interval=3))
    saga.add("http://b/a", "http://b/c", {"x": 1})
    assert body_of(saga) == {
        "gid": "g",
        "trans_type": "saga",
        "steps": [{"action": "http://b/a", "compensate": "http://b/c"}],
        "payloads": ['{"x":1}'],
        "protocol": "http",
        "retry_interval": 3,
        "concurrent": False,
    }


def test_orders_from_groups_and_explicit_orders() -> None:
    saga = SagaBuilder(new_trans("http://d", "g", "saga"))
    saga.add("a", "", 0).add_parallel([("b", "", 1), ("c", "", 2)]).add("d", "", 3)
    saga.add("e", "", 4).add_branch_order(4, after=[0])
    body = body_of(saga)
    assert body["concurrent"] is True
    assert json.loads(str(body["custom_data"])) == {
        "orders": {"1": [0], "2": [0], "3": [1, 2], "4": [0, 3]},
        "concurrent": True,
    }


def test_orders_are_validated() -> None:
    saga = SagaBuilder(new_trans("http://d", "g", "saga")).add("a", "", 0).add("b", "", 1)
    with pytest.raises(ValueError, match="earlier"):
        saga.add_branch_order(0, after=[1])
    with pytest.raises(ValueError):
        saga.add_parallel([])


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="retry_interval"):
        new_trans("http://d", "g", "saga", retry_interval=-1)
    for bad in ("localhost", "ftp://h/x", "localhost:36790/api", "localhost:port", ":36790"):
        with pytest.raises(ValueError, match="dtm_url"):
            dtm.DtmClient(bad)
    # upstream dtmgrpc's form, and an explicit scheme, are gRPC addresses
    assert dtm.DtmClient("localhost:36790").dtm_url == "localhost:36790"
    assert dtm.DtmClient("grpc://127.0.0.1:36790").dtm_url == "127.0.0.1:36790"


def test_an_operation_is_plain_generator_of_requests() -> None:
    op = _core.new_gid("http://d/api/dtmsvr")
    request = next(op)
    assert (request.method, request.url) == ("GET", "http://d/api/dtmsvr/newGid")
    with pytest.raises(StopIteration) as done:
        op.send(answer(200, {"gid": "abc", "dtm_result": "SUCCESS"}))
    assert done.value.value == "abc"
