"""Framework-free core of the web helpers: the transaction info of a branch call and the
mapping of outcomes to DTM's HTTP result codes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dtm.barrier import BranchBarrier
from dtm.errors import DuplicateError, FailureError, OngoingError
from dtm.protocol import consts
from dtm.protocol.grpc_calls import Metadata, read_metadata

Query = Mapping[str, str] | Mapping[str, Sequence[str]]
"""Query parameters: a framework's multi-dict, a plain dict, or `parse_qs`'s lists."""

Body = dict[str, str]


def _get(query: Query, key: str) -> str:
    value = query.get(key, "")
    if isinstance(value, str):
        return value
    return str(value[0]) if value else ""


@dataclass(frozen=True, slots=True)
class TransInfo:
    """What DTM says about a branch call in its query parameters (upstream's names).

    `gid`, `trans_type`, `branch_id` and `op` come with every branch call; `dtm` (the
    server's URL) with the calls upstream's clients make on their own side (TCC try, XA
    local transactions, workflow); `phase2_url` with an XA branch. Missing values are "".
    """

    gid: str
    trans_type: str
    branch_id: str
    op: str
    dtm: str = ""
    phase2_url: str = ""

    @classmethod
    def from_query(cls, query: Query) -> TransInfo:
        """From query parameters; values may be strings or lists of strings."""
        return cls(
            gid=_get(query, "gid"),
            trans_type=_get(query, "trans_type"),
            branch_id=_get(query, "branch_id"),
            op=_get(query, "op"),
            dtm=_get(query, "dtm"),
            phase2_url=_get(query, "phase2_url"),
        )

    @classmethod
    def from_grpc(cls, metadata: Metadata) -> TransInfo:
        """From a gRPC branch call's metadata (`context.invocation_metadata()`), where
        upstream puts the same facts as `dtm-gid`, `dtm-trans_type`, ..."""
        return cls.from_query(read_metadata(metadata))

    def barrier(self, *, dialect: str | None = None, table: str | None = None) -> BranchBarrier:
        """The sub-transaction barrier of this branch call.

        Raises ValueError if gid, trans_type, branch_id or op is missing.
        """
        return BranchBarrier(
            self.trans_type, self.gid, self.branch_id, self.op, dialect=dialect, table=table
        )


SUCCESS: tuple[int, Body] = (200, {"dtm_result": consts.RESULT_SUCCESS})


def result_of(exc: BaseException | None) -> tuple[int, Body] | None:
    """The HTTP status and JSON body DTM expects for a branch that ended with `exc`.

    - None (the branch succeeded): 200 `{"dtm_result": "SUCCESS"}`.
    - FailureError: 409 `{"dtm_result": "FAILURE", "message": ...}`; DTM rolls back.
    - OngoingError: 425 `{"dtm_result": "ONGOING", "message": ...}`; DTM asks again later.
    - DuplicateError: 200 SUCCESS with the message. The barrier raises it only for a
      message's local transaction (op "msg") that already committed: the work is done, and
      upstream's `Msg.DoAndSubmit` treats it so (not a failure: it goes on to check back and
      submit). Answering 409 would roll back work that was applied; upstream's
      `Result2HttpJSON` answers 500, which only makes a caller retry into the same duplicate.
    - Anything else: None, meaning "not ours": let it propagate so the framework answers
      500 and DTM retries.

    The error bodies carry `dtm_result`, which DTM and every upstream client check.
    """
    if exc is None:
        return SUCCESS[0], dict(SUCCESS[1])
    if isinstance(exc, FailureError):
        return consts.HTTP_FAILURE, {"dtm_result": consts.RESULT_FAILURE, "message": str(exc)}
    if isinstance(exc, OngoingError):
        return consts.HTTP_ONGOING, {"dtm_result": consts.RESULT_ONGOING, "message": str(exc)}
    if isinstance(exc, DuplicateError):
        return 200, {"dtm_result": consts.RESULT_SUCCESS, "message": str(exc)}
    return None


def answer(exc: BaseException | None) -> tuple[int, Body]:
    """`result_of(exc)` for a framework's response: raises `exc` itself when it is not one
    of DTM's results, so the framework answers 500."""
    result = result_of(exc)
    if result is None:
        assert exc is not None
        raise exc
    return result


HANDLED: tuple[type[Exception], ...] = (FailureError, OngoingError, DuplicateError)
"""The exception types `result_of` maps, for frameworks that register handlers by type."""
