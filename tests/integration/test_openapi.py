"""The OpenAPI document is valid, covers exactly the routes the app serves, and a live
server answers fuzzed requests only with documented codes and bodies.

The fuzzing runs against a copy of the document whose URL fields only admit
`http://127.0.0.1:1/...` (a closed loopback port), so nothing the server later calls
leaves the machine; only that copy is narrowed, the served document stays as it is.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import jsonschema_rs
import openapi_spec_validator
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from dtm.server import config
from dtm.server.api.openapi import build_openapi
from dtm.server.app import create_app
from tests.harness import DtmServer

METHODS = {"get", "post", "put", "patch", "delete", "head", "options", "trace"}
LOOPBACK = "http://127.0.0.1:1/"
URL_PATTERN = r"^http://127\.0\.0\.1:1/"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Per operation and generation mode; 24 operations x 2 modes stay well under a minute.
MAX_EXAMPLES = {schemathesis.GenerationMode.POSITIVE: 25, schemathesis.GenerationMode.NEGATIVE: 15}
FUZZ_BUDGET = 90.0  # seconds for the whole run; far above what it needs, a guard against hangs


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_openapi()


def _schemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every Schema Object of an OpenAPI document: whatever sits under a `schema` key, and
    each entry of components.schemas."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" and isinstance(value, dict):
                yield value
            elif key == "schemas" and isinstance(value, dict):
                yield from value.values()
            else:
                yield from _schemas(value)
    elif isinstance(node, list):
        for item in node:
            yield from _schemas(item)


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(document).validate()  # the OAS 3.1 meta-schema
    schemas = list(_schemas(document))
    assert len(schemas) > 20
    for schema in schemas:  # the meta-schema above leaves Schema Objects unchecked
        jsonschema_rs.meta.validate(
            {"$schema": "https://json-schema.org/draft/2020-12/schema"} | schema
        )


def test_document_passes_openapi_spec_validator(document: dict[str, Any]) -> None:
    openapi_spec_validator.validate(document)


def test_every_route_is_documented_and_nothing_else(
    document: dict[str, Any], tmp_path: Path
) -> None:
    conf = config.load(overrides={"Store.Path": str(tmp_path / "dtm.db")})
    app = create_app(conf)  # never started: routes only
    served: set[tuple[str, str]] = set()
    for route in app.routes:
        assert isinstance(route, Route)
        methods = set(route.methods or ())
        if "GET" in methods:
            methods.discard("HEAD")  # Starlette answers HEAD wherever it answers GET
        served |= {(route.path, m.lower()) for m in methods}
    documented = {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS and not (method == "head" and "get" in item)
    }
    assert served == documented


def test_every_operation_documents_its_errors(document: dict[str, Any]) -> None:
    """Routes behind the JSON error wrapper answer 500 as JSON; those reading a body can
    answer 400 and 413; all but the store-free ones can answer 503."""
    store_free = {"version", "newGid", "ping", "pingPost", "pingHead", "openapi"}
    for path, item in document["paths"].items():
        for method, op in item.items():
            codes = set(op["responses"])
            assert "200" in codes, (path, method)
            if path.startswith("/api/dtmsvr/") and op["operationId"] != "openapi":
                assert "500" in codes, (path, method)
            if "requestBody" in op:
                assert {"400", "413"} <= codes, (path, method)
            if op["operationId"] not in store_free:
                assert "503" in codes, (path, method)
            assert op.get("description"), (path, method)


def test_records_are_generated_from_the_code(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    trans = schemas["TransGlobal"]["properties"]
    assert trans["create_time"]["anyOf"][0] == {"type": "string", "format": "date-time"}
    assert {"type": "null"} in trans["finish_time"]["anyOf"]
    assert schemas["TransBranch"]["properties"]["bin_data"]["contentEncoding"] == "base64"
    assert set(schemas["TransGlobal"]["required"]) == {"gid", "trans_type", "status"}
    query = schemas["Query"]["properties"]["transaction"]
    assert {"type": "null"} in query["anyOf"]


# --- fuzzing a live server -----------------------------------------------------------------


def _loopback_only(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy whose URL fields admit only the closed loopback port (and `topic://` names
    where a message step may give one); also no `wait_result`, whose answers wait for
    branches that never answer."""
    doc = copy.deepcopy(doc)
    url = {"type": "string", "pattern": URL_PATTERN}
    schemas = doc["components"]["schemas"]
    req = schemas["TransRequest"]["properties"]
    req["steps"]["anyOf"][0]["items"] = {
        "type": "object",
        "properties": {
            "action": {"type": "string", "pattern": rf"{URL_PATTERN}|^topic://"},
            "compensate": url,
            "data": {"type": "string"},
            "request_timeout": {"type": "string"},
        },
        "additionalProperties": False,
    }
    req["query_prepared"]["anyOf"][0] = url
    req["wait_result"] = {"anyOf": [{"const": False}, {"type": "null"}]}
    register = schemas["RegisterBranchRequest"]["properties"]
    for name in ("url", "confirm", "cancel"):
        register[name] = url
    for param in doc["paths"]["/api/dtmsvr/subscribe"]["get"]["parameters"]:
        if param["name"] == "url":
            param["schema"] = url
    return doc


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _stays_on_loopback(case: schemathesis.Case[Any]) -> bool:
    """Negative generation breaks patterns on purpose: drop any case holding a string that
    names a scheme, unless it is the closed loopback port or a topic."""
    return all(
        text.startswith((LOOPBACK, "topic://"))
        for text in _strings([case.body, case.query, case.path_parameters])
        if "://" in text
    )


def _fuzz(
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    mode: schemathesis.GenerationMode,
    base_url: str,
    session: requests.Session,
) -> None:
    @settings(
        max_examples=MAX_EXAMPLES[mode],
        derandomize=True,  # the same cases on every run
        database=None,
        deadline=None,  # requests carry their own timeout
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case[Any]) -> None:
        hypothesis.assume(_stays_on_loopback(case))
        case.call_and_validate(base_url=base_url, session=session, checks=CHECKS, timeout=5)

    run()


def test_live_server_answers_as_documented(
    private_dtm: Callable[..., DtmServer], document: dict[str, Any]
) -> None:
    server = private_dtm(RequestTimeout=1)
    served = server.http.get(f"{server.api}/openapi.json", timeout=5)
    assert served.status_code == 200
    assert served.json() == document

    schema = schemathesis.openapi.from_dict(_loopback_only(document))
    findings: list[str] = []
    started = time.monotonic()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            if isinstance(result, Err):
                raise result.err()
            operation = result.ok()
            for mode in MAX_EXAMPLES:
                if time.monotonic() - started > FUZZ_BUDGET:
                    pytest.fail(f"fuzzing took over {FUZZ_BUDGET}s; findings so far: {findings}")
                try:
                    _fuzz(operation, mode, server.base, session)
                except hypothesis.errors.Unsatisfiable:
                    if mode is schemathesis.GenerationMode.POSITIVE:
                        findings.append(f"{operation.label}: no valid case could be generated")
                    # else: nothing to negate (no parameters, or only a path parameter)
                except (Exception, BaseExceptionGroup) as exc:  # collect all, report at the end
                    findings.append(f"{operation.label} [{mode.value}]: {exc}")
    assert not findings, "\n\n".join(findings)
    assert server.http.get(f"{server.base}/api/health", timeout=5).status_code == 200
