"""The exceptions carry upstream's codes, the same the server and the helpers answer."""

from __future__ import annotations

import grpc

from dtm.errors import DtmError, DuplicateError, FailureError, OngoingError, TransportError
from dtm.protocol import consts
from dtm.web import result_of
from dtm.web.grpc import status_of


def test_codes_match_the_protocol_constants() -> None:
    assert (FailureError.result, FailureError.http_status) == (
        consts.RESULT_FAILURE,
        consts.HTTP_FAILURE,
    )
    assert (OngoingError.result, OngoingError.http_status) == (
        consts.RESULT_ONGOING,
        consts.HTTP_ONGOING,
    )
    assert DuplicateError.result == "DUPLICATED"
    assert TransportError.result is None and TransportError.http_status is None


def test_codes_are_what_the_helpers_answer() -> None:
    for cls in (FailureError, OngoingError):
        answer = result_of(cls("x"))
        assert answer is not None
        assert answer[0] == cls.http_status
        assert answer[1]["dtm_result"] == cls.result
        grpc_answer = status_of(cls("x"))
        assert grpc_answer is not None and cls.grpc_code is not None
        assert grpc_answer[0] == grpc.StatusCode[cls.grpc_code]
    assert all(issubclass(c, DtmError) for c in (DuplicateError, TransportError))
