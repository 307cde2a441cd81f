"""How a gRPC branch call is addressed and what it carries, shared by the server (which
makes such calls) and the SDK (which makes and serves them); no gRPC import.

A branch URL is `host:port/package.Service/Method`. The transaction info travels in
metadata as upstream's `TransInfo2Ctx` puts it: `dtm-gid`, `dtm-trans_type`,
`dtm-branch_id`, `dtm-op`, `dtm-dtm`, and `dtm-phase2_url` for an XA branch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeAlias

PREFIX = "dtm-"

Metadata: TypeAlias = Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]]
"""An incoming call's metadata: what `context.invocation_metadata()` gives (key, value
pairs), or a mapping."""


def read_metadata(metadata: Metadata) -> dict[str, str]:
    """The `dtm-*` entries, prefix removed: `{"gid": ..., "branch_id": ..., ...}`. The first
    value of a key wins, as upstream's `mdGet`."""
    pairs = metadata.items() if isinstance(metadata, Mapping) else metadata
    found: dict[str, str] = {}
    for key, value in pairs:
        if key.startswith(PREFIX):
            text = value.decode() if isinstance(value, bytes) else value
            found.setdefault(key[len(PREFIX) :], text)
    return found


def parse_url(url: str) -> tuple[str, str]:
    """(target, method) of `host:port/package.Service/Method`; ValueError when not one."""
    target, sep, path = url.partition("/")
    service, _, method = path.rpartition("/")
    if not (sep and target and service and method) or "://" in url:
        raise ValueError(f"bad gRPC url {url!r}: expected host:port/package.Service/Method")
    return target, f"/{path}"


def metadata_of(
    gid: str,
    trans_type: str,
    branch_id: str,
    op: str,
    *,
    dtm: str = "",
    headers: Mapping[str, str] | None = None,
    phase2_url: str = "",
) -> tuple[tuple[str, str], ...]:
    """The metadata of a branch call as upstream sends it: the transaction info, the
    branch headers (keys lowered, as gRPC requires), and `dtm-phase2_url` when given."""
    meta = [
        (PREFIX + "gid", gid),
        (PREFIX + "trans_type", trans_type),
        (PREFIX + "branch_id", branch_id),
        (PREFIX + "op", op),
        (PREFIX + "dtm", dtm),
    ]
    meta.extend((k.lower(), v) for k, v in (headers or {}).items())
    if phase2_url:
        meta.append((PREFIX + "phase2_url", phase2_url))
    return tuple(meta)
