from __future__ import annotations

import subprocess
import sys

import pytest

from dtm.errors import DuplicateError, FailureError, OngoingError, TransportError
from dtm.web import TransInfo, result_of


def test_trans_info_from_strings_and_lists() -> None:
    query = {"gid": "g", "trans_type": "saga", "branch_id": "01", "op": "action"}
    info = TransInfo.from_query(query)
    assert info == TransInfo("g", "saga", "01", "action", "", "")
    assert TransInfo.from_query({k: [v] for k, v in query.items()}) == info
    assert TransInfo.from_query({"gid": []}).gid == ""
    with pytest.raises(AttributeError):
        info.gid = "other"  # type: ignore[misc]


def test_barrier_from_info() -> None:
    barrier = TransInfo("g", "saga", "01", "compensate").barrier(dialect="sqlite")
    assert (barrier.gid, barrier.trans_type, barrier.branch_id, barrier.op) == (
        "g",
        "saga",
        "01",
        "compensate",
    )
    with pytest.raises(ValueError):
        TransInfo("g", "saga", "", "action").barrier()


def test_result_of() -> None:
    assert result_of(None) == (200, {"dtm_result": "SUCCESS"})
    assert result_of(FailureError("x")) == (409, {"dtm_result": "FAILURE", "message": "x"})
    assert result_of(OngoingError("y")) == (425, {"dtm_result": "ONGOING", "message": "y"})
    assert result_of(DuplicateError("z")) == (200, {"dtm_result": "SUCCESS", "message": "z"})
    assert result_of(TransportError("t")) is None
    assert result_of(RuntimeError("r")) is None


def test_import_dtm_imports_no_web_framework() -> None:
    code = (
        "import sys, dtm, dtm.web; "
        "print(sorted(m for m in ('flask', 'django', 'starlette', 'fastapi', 'werkzeug') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "name", ["dtm.web", "dtm.web.starlette", "dtm.web.flask", "dtm.web.django"]
)
def test_modules_export_exactly_all(name: str) -> None:
    """`__all__` names every public function and class each module defines (the package,
    those of its `_core`)."""
    import importlib
    import inspect

    module = importlib.import_module(name)
    defined = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ in {name, f"{name}._core"}
    }
    assert sorted(module.__all__) == sorted(defined)
