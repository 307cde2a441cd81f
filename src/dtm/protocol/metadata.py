"""The transaction info of a gRPC branch call, carried in metadata as upstream's
`TransInfo2Ctx` puts it: `dtm-gid`, `dtm-trans_type`, `dtm-branch_id`, `dtm-op`, `dtm-dtm`,
and `dtm-phase2_url` for an XA branch. Shared by the server (which sends it) and the SDK
(which sends and reads it); no gRPC import, so reading it needs no gRPC install.
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
