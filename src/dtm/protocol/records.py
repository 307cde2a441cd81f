"""Records as the server stores them and as `query` / `all` answer them.

Field names and JSON names are upstream's (`trans_global`, `trans_branch_op`, `kv` tables):
clients and admin tools of every language read these documents.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class TransGlobal(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One global transaction: a row of `trans_global`."""

    id: int = 0
    gid: str
    trans_type: str
    status: str
    query_prepared: str = ""
    protocol: str = "http"
    create_time: datetime | None = None
    update_time: datetime | None = None
    finish_time: datetime | None = None
    rollback_time: datetime | None = None
    options: str = ""
    custom_data: str = ""
    next_cron_interval: int = 0
    next_cron_time: datetime | None = None
    owner: str = ""
    ext_data: str = ""
    result: str = ""
    rollback_reason: str = ""

    @property
    def finished(self) -> bool:
        return self.status in ("succeed", "failed")


class TransBranch(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One operation of one branch: a row of `trans_branch_op`.

    A saga step is two rows (compensate, action), a TCC branch two (cancel, confirm).
    """

    id: int = 0
    gid: str
    url: str = ""
    bin_data: bytes = b""
    branch_id: str
    op: str
    status: str
    create_time: datetime | None = None
    update_time: datetime | None = None
    finish_time: datetime | None = None
    rollback_time: datetime | None = None


class KV(msgspec.Struct, kw_only=True):
    """A versioned key-value pair: a row of `kv` (topics live here)."""

    id: int = 0
    cat: str
    k: str
    v: str
    version: int = 1
    create_time: datetime | None = None
    update_time: datetime | None = None
