"""XA steps over connections opened for each step, blocking or asyncio alike: what a
workflow's `do_xa` needs, whichever kind of `connect` its caller passes.

Each step opens its own connection and closes it when done, so a MySQL xid is never left
bound to a live session (see `dtm.xa`). A blocking `connect` (PyMySQL, psycopg) runs, with
the step, in a worker thread; an async one (asyncmy, asyncpg) runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeAlias, cast

from dtm import xa
from dtm.protocol import consts
from dtm.xa import aio

__all__ = ["XaConnect", "XaLocalFn", "XaRunner"]

XaConnect: TypeAlias = Callable[[], Awaitable[Any]] | Callable[[], Any]
"""Opens a new connection: `async def` for asyncmy / asyncpg, plain `def` for PyMySQL /
psycopg."""
XaLocalFn: TypeAlias = (
    Callable[[Any], Awaitable[bytes | str | None]] | Callable[[Any], bytes | str | None]
)
"""The work of an XA step, given the connection; async exactly when `connect` is."""


def _is_async(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


class XaRunner:
    """`xa_local` and phase two of one database, each on a connection of its own."""

    def __init__(self, connect: XaConnect, *, dialect: str | None = None) -> None:
        self.connect = connect
        self.dialect = dialect
        self.is_async = _is_async(connect)

    async def local(
        self,
        gid: str,
        branch_id: str,
        fn: XaLocalFn,
        before_prepare: Callable[[], Coroutine[Any, Any, None]],
    ) -> bytes | str | None:
        """`fn`'s result, its XA transaction prepared; `before_prepare` is awaited after
        `fn` succeeded, inside the transaction (a workflow records there that the step
        may have prepared)."""
        if self.is_async:
            async_fn = cast(Callable[[Any], Awaitable[bytes | str | None]], fn)

            async def work(conn: Any) -> bytes | str | None:
                result = await async_fn(conn)
                await before_prepare()
                return result

            conn = await cast(Callable[[], Awaitable[Any]], self.connect)()
            try:
                return await aio.xa_local(conn, gid, branch_id, work, dialect=self.dialect)
            finally:
                await aio._close(conn)

        sync_fn = cast(Callable[[Any], bytes | str | None], fn)
        loop = asyncio.get_running_loop()

        def sync_work(conn: Any) -> bytes | str | None:
            result = sync_fn(conn)
            asyncio.run_coroutine_threadsafe(before_prepare(), loop).result()
            return result

        def run() -> bytes | str | None:
            with contextlib.closing(self._connect_sync()) as conn:
                return xa.xa_local(conn, gid, branch_id, sync_work, dialect=self.dialect)

        return await asyncio.to_thread(run)

    def _connect_sync(self) -> Any:
        return cast(Callable[[], Any], self.connect)()

    async def phase2(self, gid: str, branch_id: str, op: str) -> None:
        """`xa_commit` (op "commit") or `xa_rollback` (op "rollback")."""
        if self.is_async:
            conn = await cast(Callable[[], Awaitable[Any]], self.connect)()
            try:
                finish = aio.xa_commit if op == consts.OP_COMMIT else aio.xa_rollback
                await finish(conn, gid, branch_id, dialect=self.dialect)
            finally:
                await aio._close(conn)
            return

        def run() -> None:
            with contextlib.closing(self._connect_sync()) as conn:
                finish = xa.xa_commit if op == consts.OP_COMMIT else xa.xa_rollback
                finish(conn, gid, branch_id, dialect=self.dialect)

        await asyncio.to_thread(run)
