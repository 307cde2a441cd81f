"""Request bodies of the server's HTTP API, decoded with msgspec.

Nullable fields are accepted where real clients send `null` (the PyPI `dtmcli` sends
`"custom_data": null`), and unknown fields are ignored, as Go's decoder does.
"""

from __future__ import annotations

import msgspec


class TransOptions(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Per-transaction options; stored as JSON in `trans_global.options`.

    Times are whole seconds, as upstream. `branch_request_timeouts` (branch id -> seconds)
    is this implementation's addition: a per-branch request timeout.
    """

    wait_result: bool = False
    timeout_to_fail: int = 0
    request_timeout: int = 0
    retry_interval: int = 0
    branch_headers: dict[str, str] = msgspec.field(default_factory=dict)
    concurrent: bool = False
    retry_limit: int = 0
    retry_count: int = 0
    branch_request_timeouts: dict[str, int] = msgspec.field(default_factory=dict)


class TransRequest(msgspec.Struct, kw_only=True):
    """Body of prepare, submit, abort, forceStop, prepareWorkflow and resetNextCronTime."""

    gid: str = ""
    trans_type: str = ""
    steps: list[dict[str, str]] | None = None
    payloads: list[str] | None = None
    # Binary payloads, one per step: what gRPC clients send (DtmRequest.BinPayloads);
    # base64 in JSON. Used instead of `payloads` when given.
    bin_payloads: list[bytes] | None = None
    custom_data: str | None = None
    query_prepared: str | None = None
    protocol: str | None = None
    rollback_reason: str | None = None
    req_extra: dict[str, str] | None = None
    wait_result: bool | None = None
    timeout_to_fail: int | None = None
    request_timeout: int | None = None
    retry_interval: int | None = None
    branch_headers: dict[str, str] | None = None
    concurrent: bool | None = None
    retry_limit: int | None = None
    retry_count: int | None = None

    def options(self) -> TransOptions:
        return TransOptions(
            wait_result=bool(self.wait_result),
            timeout_to_fail=self.timeout_to_fail or 0,
            request_timeout=self.request_timeout or 0,
            retry_interval=self.retry_interval or 0,
            branch_headers=self.branch_headers or {},
            concurrent=bool(self.concurrent),
            retry_limit=self.retry_limit or 0,
            retry_count=self.retry_count or 0,
        )


_options_decoder = msgspec.json.Decoder(TransOptions)
_options_encoder = msgspec.json.Encoder()


def encode_options(options: TransOptions) -> str:
    """Options as stored: empty string when every option has its default, as upstream."""
    text = _options_encoder.encode(options).decode()
    return "" if text == "{}" else text


def decode_options(text: str) -> TransOptions:
    """Options from a stored row; upstream's `{"concurrent":false}` form is read too."""
    if not text:
        return TransOptions()
    return _options_decoder.decode(text)
