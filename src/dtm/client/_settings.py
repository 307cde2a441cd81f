"""The client's settings: fixed when the client is made, shared by both transports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSettings:
    """Where the DTM server is and how requests to it (and to branches) are sent.

    dtm_url: the server's HTTP API, upstream's form `http://host:36789/api/dtmsvr`, or its
        gRPC API as `host:36790` (upstream dtmgrpc's form) or `grpc://host:36790`: then the
        transactions are sent over gRPC and their branches are gRPC methods.
    timeout: seconds for one request, connect to last byte.
    headers: sent on every request, to the server and to the branches this client calls.
    """

    dtm_url: str
    timeout: float = 10.0
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of(
        cls, dtm_url: str, *, timeout: float, headers: Mapping[str, str] | None
    ) -> ClientSettings:
        dtm_url = dtm_url.removeprefix("grpc://")
        if not dtm_url.startswith(("http://", "https://")):
            host, sep, port = dtm_url.rpartition(":")
            if "/" in dtm_url or not (sep and host and port.isdigit()):
                raise ValueError(
                    f"dtm_url should be an http(s) URL or a gRPC host:port, not {dtm_url!r}"
                )
        if timeout <= 0:
            raise ValueError("timeout should be positive seconds")
        return cls(
            dtm_url=dtm_url.rstrip("/"),
            timeout=timeout,
            headers=MappingProxyType(dict(headers or {})),
        )
