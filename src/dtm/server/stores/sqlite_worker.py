"""Threads that each own one sqlite3 connection and run the SQLite store's jobs in batches.

sqlite3 calls block, so they cannot run on the event loop; a thread per call (executor,
aiosqlite) costs more than the query. Instead one writer thread takes every queued write
and commits them together (group commit: one fsync for many acknowledged writes), and one
reader thread answers every queued read inside one snapshot. Each batch is answered with
one `call_soon_threadsafe`, so waking the loop is paid per batch, not per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, TypeVarTuple

from dtm.server.stores.base import StoreUnavailable

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def format_time(moment: datetime) -> str:
    """UTC text of a time as the tables keep it; lexical order is time order.

    A naive time is taken to be UTC already, as the store's own times are.
    """
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(" ", "microseconds")


def parse_time(text: str | None) -> datetime | None:
    """The aware UTC time of a stored text, None for NULL."""
    if text is None:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Tx:
    """What a job sees: the worker's cursor and the store's clock, read once per batch so
    every job of one commit agrees on "now"."""

    __slots__ = ("cur", "now", "stamp")

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self.cur = cur
        self.now = datetime.now(UTC)
        self.stamp = format_time(self.now)

    def later(self, seconds: float) -> datetime:
        return self.now + timedelta(seconds=seconds)


Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]
# A future paired with the exception to raise, or None and the value to return.
Outcome = tuple["asyncio.Future[Any]", BaseException | None, Any]


class _Stop:
    """Queued last by `stop`: the thread finishes what came before, then exits."""

    __slots__ = ("done",)

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done


def _unavailable(exc: BaseException) -> BaseException:
    """Store errors become StoreUnavailable; anything else is a bug and travels as it is."""
    if isinstance(exc, sqlite3.Error):
        error = StoreUnavailable(f"sqlite: {exc}")
        error.__cause__ = exc
        return error
    return exc


def _resolve(outcomes: list[Outcome]) -> None:
    for future, error, value in outcomes:
        # A caller that was cancelled no longer waits; its write still happened.
        if future.cancelled():
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


def _settle(outcomes: list[Outcome]) -> None:
    """Hand the outcomes to their loops, one wake-up per loop (almost always just one)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    for loop, items in by_loop.items():
        # A closed loop raises RuntimeError: nobody is left to wait for these answers.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, items)


def _rollback(conn: sqlite3.Connection) -> None:
    """End a failed batch's transaction, if SQLite has not ended it already."""
    if conn.in_transaction:
        # A broken connection fails here too; the next BEGIN will report it.
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


class Worker:
    """One thread, one connection, one queue of jobs run in batches of up to `max_batch`.

    A writer runs each batch in one `BEGIN IMMEDIATE ... COMMIT`, and a failing job undoes
    only itself (see `_write_batch`); nobody hears of success before the commit. A reader
    runs each batch in one read transaction, so a job's several SELECTs see one snapshot.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], sqlite3.Connection],
        *,
        write: bool,
        max_batch: int,
    ) -> None:
        self._name = name
        self._connect = connect
        self._write = write
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Job | _Stop] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._running = False
        # Written by the worker thread only; read for metrics and benchmarks.
        self.batches = 0
        self.jobs = 0

    async def start(self) -> None:
        """Start the thread and wait until its connection is ready."""
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._thread = threading.Thread(target=self._main, args=(ready,), name=self._name)
        # Daemon so a forgotten close() cannot hang interpreter exit; close() joins it.
        self._thread.daemon = True
        self._thread.start()
        await ready
        self._running = True

    async def stop(self) -> None:
        """Run what is queued, then close the connection and end the thread."""
        thread = self._thread
        if thread is None:
            return
        self._thread = None
        if self._running:
            self._running = False
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._queue.put(_Stop(done))
            await done
        thread.join()

    def submit(self, fn: Callable[[Tx, *Ts], T], *args: *Ts) -> asyncio.Future[T]:
        """Queue `fn(tx, *args)` for the thread; the future gets its value or error."""
        if not self._running:
            raise StoreUnavailable("the SQLite store is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put((fn, args, future))
        return future

    # --- on the worker thread ------------------------------------------------------

    def _main(self, ready: asyncio.Future[None]) -> None:
        loop = ready.get_loop()
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            loop.call_soon_threadsafe(ready.set_exception, _unavailable(exc))
            return
        loop.call_soon_threadsafe(ready.set_result, None)
        # One cursor for every statement: cheaper than conn.execute's cursor per call.
        stop = self._serve(conn.cursor())
        conn.close()
        stop.get_loop().call_soon_threadsafe(stop.set_result, None)

    def _serve(self, cur: sqlite3.Cursor) -> asyncio.Future[None]:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        run = self._run_writes if self._write else self._run_reads
        while True:
            batch: list[Job] = []
            item = get()
            while not isinstance(item, _Stop):
                batch.append(item)
                if len(batch) >= self._max_batch:
                    break
                try:
                    item = get_nowait()
                except queue.Empty:
                    break
            if batch:
                self.batches += 1
                self.jobs += len(batch)
                _settle(run(cur, batch))
            if isinstance(item, _Stop):
                return item.done

    def _run_writes(self, cur: sqlite3.Cursor, batch: list[Job]) -> list[Outcome]:
        try:
            try:
                return _write_batch(cur, batch, isolate=False)
            except _Replay:
                # Rare (a store error or a bug): redo the batch with a savepoint per job,
                # so the failing job is undone alone. Jobs read only the database and
                # their arguments, so running them again gives what savepoints would have.
                _rollback(cur.connection)
                return _write_batch(cur, batch, isolate=True)
        except Exception as exc:
            _rollback(cur.connection)
            # Nothing of this batch is durable: every job hears so, each with its own
            # exception object because each is raised in a different coroutine.
            return [(future, _unavailable(exc), None) for _, _, future in batch]

    def _run_reads(self, cur: sqlite3.Cursor, batch: list[Job]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        try:
            cur.execute("BEGIN")
            tx = Tx(cur)
            for fn, args, future in batch:
                try:
                    outcomes.append((future, None, fn(tx, *args)))
                except Exception as exc:
                    outcomes.append((future, _unavailable(exc), None))
            cur.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(cur.connection)
            return [(future, _unavailable(exc), None) for _, _, future in batch]
        return outcomes


class _Replay(Exception):
    """A job failed in a batch run without savepoints; run the batch again with them."""


def _write_batch(cur: sqlite3.Cursor, batch: list[Job], *, isolate: bool) -> list[Outcome]:
    """Run the jobs in one transaction and commit it; with `isolate`, each job inside a
    savepoint that its failure rolls back.

    Savepoints cost about a fifth of a small job's time, so the first run goes without
    them and any failure asks for a replay with them (`_Replay`).
    """
    execute = cur.execute
    outcomes: list[Outcome] = []
    execute("BEGIN IMMEDIATE")
    tx = Tx(cur)
    for fn, args, future in batch:
        if isolate:
            execute("SAVEPOINT job")
        try:
            value = fn(tx, *args)
        except Exception as exc:
            if not isolate:
                raise _Replay from exc
            if not cur.connection.in_transaction:
                # SQLite itself rolled the whole transaction back (I/O error, full disk):
                # the jobs run before are lost too.
                raise
            execute("ROLLBACK TO job")
            outcomes.append((future, _unavailable(exc), None))
        else:
            outcomes.append((future, None, value))
        if isolate:
            execute("RELEASE job")
    execute("COMMIT")
    return outcomes
