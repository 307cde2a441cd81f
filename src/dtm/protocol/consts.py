"""Vocabulary of DTM's wire protocol: statuses, branch ops, result strings.

The strings are upstream's exactly; every client in every language compares against them.
"""

from __future__ import annotations

from typing import Final

# Global transaction and branch statuses.
PREPARED: Final = "prepared"
SUBMITTED: Final = "submitted"
ABORTING: Final = "aborting"
SUCCEED: Final = "succeed"
FAILED: Final = "failed"

UNFINISHED: Final = frozenset({PREPARED, SUBMITTED, ABORTING})
FINISHED: Final = frozenset({SUCCEED, FAILED})

# Transaction types.
SAGA: Final = "saga"
MSG: Final = "msg"
TCC: Final = "tcc"
XA: Final = "xa"
WORKFLOW: Final = "workflow"
TRANS_TYPES: Final = frozenset({SAGA, MSG, TCC, XA, WORKFLOW})

# Branch operations.
OP_ACTION: Final = "action"
OP_COMPENSATE: Final = "compensate"
OP_TRY: Final = "try"
OP_CONFIRM: Final = "confirm"
OP_CANCEL: Final = "cancel"
OP_COMMIT: Final = "commit"
OP_ROLLBACK: Final = "rollback"
OP_MSG: Final = "msg"

# Result strings carried in bodies as {"dtm_result": ...}.
RESULT_SUCCESS: Final = "SUCCESS"
RESULT_FAILURE: Final = "FAILURE"
RESULT_ONGOING: Final = "ONGOING"

# HTTP status codes that carry a result.
HTTP_FAILURE: Final = 409
HTTP_ONGOING: Final = 425

# JSON-RPC error codes that carry a result.
JRPC_CODE_FAILURE: Final = -32901
JRPC_CODE_ONGOING: Final = -32902

PROTOCOL_HTTP: Final = "http"
PROTOCOL_GRPC: Final = "grpc"
PROTOCOL_JSONRPC: Final = "json-rpc"

MSG_TOPIC_PREFIX: Final = "topic://"
# The branch id and op a message's query_prepared check-back and workflow call-back use.
CHECKBACK_BRANCH_ID: Final = "00"
