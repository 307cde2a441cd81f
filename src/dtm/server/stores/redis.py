"""The Redis store: every multi-key change is one Lua script, timed by Redis's own clock.

Keys (`p` is `Store.RedisPrefix`, `{a}` by default; the braces put every key in one
cluster slot, as upstream does):

    p_g_<gid>     string   the transaction's JSON (a `TransGlobal`)
    p_b_<gid>     hash     its branch operations: field `["<branch_id>","<op>"]` -> JSON
    p_u           zset     unfinished gids by next_cron_time (us); what the cron takes
    p_all         zset     every gid by id: `scan` pages it newest first
    p_f           zset     finished gids by their last update (us): `purge_finished`
    p_ids         hash     counters of ids: fields g, b, kv
    p_kv_<cat>    hash     the pairs of one category: key -> JSON (a `KV`)
    p_kvi_<cat>   zset     its keys by id: `scan_kv` pages it newest first
    p_kvc         set      categories that have pairs: `find_kv` over any category

Where upstream's store went wrong, this one does not: keys are only ever read by exact
name (upstream scanned `p_b_<gid>*`-like patterns and single SCAN calls, which mix gids
that prefix each other and miss keys); unfinished transactions never expire (upstream
dropped them after `DataExpire`, which is therefore not used here), finished ones expire
`FinishedDataExpire` seconds after their last update; the due-time index is what the
cron reads, so every change of next_cron_time moves it.

Scripts live in `lua/` beside this module, each prefixed with `lua/lib.lua`, loaded with
SCRIPT LOAD at open and run by EVALSHA (loaded again when a restarted server has forgotten
them). Calls of concurrent callers travel together in pipelines (`_AutoPipeline`), the
Redis counterpart of the SQLite store's group commit. Times are microseconds in scores and
fixed-width RFC 3339 text in the JSON, exact until the year 2255.

Durability is Redis's own: an acknowledged write survives a crash only with
`appendonly yes` and `appendfsync always` on the server.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Final

import msgspec
import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.maint_notifications import MaintNotificationsConfig

from dtm.protocol.consts import FINISHED
from dtm.protocol.records import KV, TransBranch, TransGlobal
from dtm.server.config import StoreConfig
from dtm.server.stores.base import Page, Progress, ScanFilter, Store, StoreUnavailable

__all__ = ["RedisStore"]

# Pipelines in flight at once, each on its own connection: `MaxOpenConns` (upstream's default
# is 500) capped at this. Redis runs commands on one thread, so a few pipelines keep it busy.
MAX_PIPELINES: Final = 4
# Commands sent in one pipeline at most.
MAX_BATCH: Final = 256
# Seconds to connect, to wait for an answer, and to wait for a free pooled connection.
CONNECT_TIMEOUT: Final = 5.0
COMMAND_TIMEOUT: Final = 10.0
# Index entries one `scan` call examines beyond `limit` before it returns a short page.
SCAN_BUDGET: Final = 1000

_SCRIPTS: Final = (
    "create",
    "add_branches",
    "load",
    "save_progress",
    "lock_due",
    "reset_cron_time",
    "reset_next_cron_time",
    "purge_finished",
    "scan",
    "kv_create",
    "kv_update",
    "kv_delete",
    "kv_find",
    "kv_scan",
)

# Failures that mean "Redis cannot answer now", as opposed to a bug in a script.
_OUTAGES: Final = (
    rexc.ConnectionError,  # includes BusyLoadingError, MaxConnectionsError, auth failures
    rexc.TimeoutError,
    rexc.ReadOnlyError,  # a replica after a failover
    rexc.OutOfMemoryError,
    rexc.ClusterDownError,  # includes MasterDownError
    rexc.TryAgainError,
    OSError,
    asyncio.TimeoutError,
)
# Replies of Redis that are outages too but have no exception class of their own.
_OUTAGE_REPLIES: Final = ("BUSY ", "LOADING ", "MASTERDOWN ")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

_encode = msgspec.json.Encoder().encode
_decode_global = msgspec.json.Decoder(TransGlobal).decode
_decode_branch = msgspec.json.Decoder(TransBranch).decode
_decode_kv = msgspec.json.Decoder(KV).decode


def _lua(name: str) -> str:
    folder = resources.files(__package__).joinpath("lua")
    return folder.joinpath("lib.lua").read_text() + folder.joinpath(f"{name}.lua").read_text()


def _time(micros: int) -> datetime:
    """The aware UTC time of microseconds since the epoch, as the scripts write it."""
    return _EPOCH + timedelta(microseconds=micros)


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _iso(moment: datetime) -> str:
    """A time as the scripts write it (a naive time is taken to be UTC, as in SQL stores)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z"
    )


def _field(branch_id: str, op: str) -> bytes:
    """The hash field of one branch operation: unambiguous whatever the two strings hold."""
    return _encode((branch_id, op))


def _branch_args(gid: str, branches: Sequence[TransBranch]) -> list[bytes]:
    """(field, JSON) pairs; the JSON leaves out id and times, which the script puts in."""
    args: list[bytes] = []
    for branch in branches:
        args.append(_field(branch.branch_id, branch.op))
        args.append(
            _encode(
                msgspec.structs.replace(
                    branch,
                    id=0,
                    gid=gid,
                    create_time=None,
                    update_time=None,
                    finish_time=None,
                    rollback_time=None,
                )
            )
        )
    return args


def _stamp_branches(branches: Sequence[TransBranch], ids: Sequence[int], now: datetime) -> None:
    """Give the caller's objects what the store wrote for them (skipping those not new)."""
    for branch, branch_id in zip(branches, ids, strict=True):
        if branch_id:
            branch.id = branch_id
            branch.create_time = branch.update_time = now


def _position(position: str) -> str:
    """A position as a score; ValueError for one this store never gave out."""
    return str(int(position)) if position else ""


def _next_position(ids: list[int], limit: int) -> str:
    """Upstream's paging: the last id returned, or "" once a page comes back short."""
    return str(ids[-1]) if ids and len(ids) >= limit else ""


def _unavailable(exc: BaseException) -> BaseException:
    """Outages become StoreUnavailable (the cause chained); anything else is a bug and
    travels as it is."""
    if isinstance(exc, _OUTAGES) or (
        isinstance(exc, rexc.ResponseError) and str(exc).startswith(_OUTAGE_REPLIES)
    ):
        error = StoreUnavailable(f"redis: {exc}")
        error.__cause__ = exc
        return error
    return exc


Command = tuple[Any, ...]
Call = tuple[Command, "asyncio.Future[Any]"]


def _resolve(future: asyncio.Future[Any], reply: Any) -> None:
    if future.done():  # its caller was cancelled
        return
    if isinstance(reply, Exception):
        future.set_exception(_unavailable(reply))
    else:
        future.set_result(reply)


def _fail(calls: list[Call], exc: BaseException) -> None:
    for _, future in calls:
        if future.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(_unavailable(exc))


class _AutoPipeline:
    """Sends the commands of concurrent callers together, in pipelines.

    Redis's answer costs the caller ~57 us of redis-py CPU per single command but ~11 us
    within a pipeline (measured on this machine kind), so, like the SQLite store's group
    commit, callers queue their command and one of at most `lanes` drain tasks sends all
    that are queued at once. Each script stays atomic on its own; commands of one pipeline
    are not a transaction. The pipeline runs without retries: a command whose answer was
    lost may have been applied, and only its caller can decide what to do.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        lanes: int,
        reload_scripts: Callable[[], Awaitable[None]],
    ) -> None:
        self._client = client
        self._lanes = lanes
        self._reload_scripts = reload_scripts
        self._pending: list[Call] = []
        self._draining = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def call(self, *command: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((command, future))
        if self._draining < self._lanes:
            # Counted now, not when the task starts, so that a burst starts `lanes` tasks
            # at most; the first one to run takes everything queued in this loop tick.
            self._draining += 1
            task = asyncio.ensure_future(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                await self._send(batch)
        finally:
            # No await between the last look at _pending and this: a command queued
            # after it sees the lane free and starts a task of its own.
            self._draining -= 1

    async def _send(self, batch: list[Call], *, reload: bool = True) -> None:
        try:
            replies = await self._execute([command for command, _ in batch])
        except BaseException as exc:
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        lost: list[Call] = []
        for call, reply in zip(batch, replies, strict=True):
            if reload and isinstance(reply, rexc.NoScriptError):
                lost.append(call)
            else:
                _resolve(call[1], reply)
        if lost:
            # Redis restarted (it may keep nothing): those scripts never ran. Load them
            # again and send those commands once more.
            try:
                await self._reload_scripts()
            except BaseException as exc:
                _fail(lost, exc)
                if not isinstance(exc, Exception):
                    raise
                return
            await self._send(lost, reload=False)

    async def _execute(self, commands: list[Command]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def close(self) -> None:
        """Wait for what is queued and in flight."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class RedisStore(Store):
    """A `Store` in Redis (>= 5), shared by any number of server processes.

    `conf` gives Host, Port, User, Password, RedisPrefix, FinishedDataExpire (seconds a
    finished transaction is kept; 0 keeps it until `purge_finished`) and MaxOpenConns
    (capped at `MAX_PIPELINES`).

    Calls of concurrent callers share pipelines (see `_AutoPipeline`); each call is still
    one script, atomic on its own.
    """

    def __init__(self, conf: StoreConfig) -> None:
        if "," in conf.Host:
            # Upstream takes a list of hosts as a Redis Cluster; keys here assume one slot
            # set by the prefix's hash tag, and a cluster client is not written yet.
            raise ValueError("Store.Host: Redis Cluster (a list of hosts) is not supported")
        self._conf = conf
        self._prefix = conf.RedisPrefix
        self._ttl = max(conf.FinishedDataExpire, 0)
        self._client: aioredis.Redis | None = None
        self._pipeline: _AutoPipeline | None = None
        self._scripts = {name: _lua(name) for name in _SCRIPTS}
        self._shas = {
            name: hashlib.sha1(text.encode()).hexdigest() for name, text in self._scripts.items()
        }
        p = self._prefix
        self._unfinished = f"{p}_u"
        self._all = f"{p}_all"
        self._finished = f"{p}_f"
        self._counters = f"{p}_ids"
        self._categories = f"{p}_kvc"

    @property
    def prefix(self) -> str:
        """The prefix of every key this store uses."""
        return self._prefix

    @property
    def client_name(self) -> str:
        """The name its connections give themselves (CLIENT LIST shows it)."""
        return f"dtm-py:{self._prefix}"

    # --- connection ----------------------------------------------------------------

    async def open(self) -> None:
        conf = self._conf
        lanes = max(1, min(conf.MaxOpenConns, MAX_PIPELINES))
        pool = aioredis.BlockingConnectionPool(
            host=conf.Host or "127.0.0.1",
            port=conf.Port or 6379,
            username=conf.User or None,
            password=conf.Password or None,
            client_name=self.client_name,
            max_connections=lanes,
            timeout=COMMAND_TIMEOUT,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            # No retries inside redis-py: a write whose answer was lost may have happened,
            # and only the caller can tell whether to try again. A dead pooled connection
            # is replaced when it is next taken.
            retry=Retry(NoBackoff(), 0),
            # Maintenance notifications are a Redis Enterprise feature; redis-py 8.1's
            # "auto" default asks for them on every connect and, while on, skips the check
            # that replaces a dead pooled connection (one the server closed) on checkout.
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        client = aioredis.Redis.from_pool(pool)
        try:
            await client.ping()
            # Loaded now so that an unusable server fails at start, not on the first write.
            await self._load_scripts(client)
        except BaseException as exc:
            await client.aclose()
            error = _unavailable(exc)
            if error is exc:
                raise
            raise StoreUnavailable(f"redis at {conf.Host}:{conf.Port}: {exc}") from exc
        self._client = client
        self._pipeline = _AutoPipeline(
            client, lanes=lanes, reload_scripts=lambda: self._load_scripts(client)
        )

    async def _load_scripts(self, client: aioredis.Redis) -> None:
        for name, text in self._scripts.items():
            sha = await client.script_load(text)
            if sha != self._shas[name]:
                raise RuntimeError(f"Redis gave script {name} the SHA1 {sha}")

    async def migrate(self) -> None:
        """Nothing to create: Redis makes keys on first write."""

    async def close(self) -> None:
        client, self._client = self._client, None
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            await pipeline.close()
        if client is not None:
            await client.aclose()

    async def _call(self, *command: Any) -> Any:
        if self._pipeline is None:
            raise StoreUnavailable("the Redis store is not open")
        return await self._pipeline.call(*command)

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._call("EVALSHA", self._shas[name], len(keys), *keys, *args)

    async def ping(self) -> None:
        await self._call("PING")

    # --- keys ------------------------------------------------------------------------

    def _g(self, gid: str) -> str:
        return f"{self._prefix}_g_{gid}"

    def _b(self, gid: str) -> str:
        return f"{self._prefix}_b_{gid}"

    def _kv(self, cat: str) -> str:
        return f"{self._prefix}_kv_{cat}"

    def _kvi(self, cat: str) -> str:
        return f"{self._prefix}_kvi_{cat}"

    # --- global transactions -----------------------------------------------------------

    async def create(
        self, trans: TransGlobal, branches: Sequence[TransBranch], *, next_cron_delay: float
    ) -> bool:
        gid = trans.gid
        delay = _micros(next_cron_delay)
        body = msgspec.structs.replace(
            trans,
            id=0,
            create_time=None,
            update_time=None,
            finish_time=None,
            rollback_time=None,
            next_cron_time=None,
        )
        reply = await self._run(
            "create",
            (
                self._g(gid),
                self._b(gid),
                self._unfinished,
                self._all,
                self._finished,
                self._counters,
            ),
            (
                gid,
                delay,
                "1" if trans.status in FINISHED else "0",
                self._ttl,
                _encode(body),
                *_branch_args(gid, branches),
            ),
        )
        if reply is None:
            return False
        trans_id, now_us, *ids = reply
        now = _time(now_us)
        trans.id = trans_id
        trans.create_time = trans.update_time = now
        trans.next_cron_time = _time(now_us + delay)
        _stamp_branches(branches, ids, now)
        return True

    async def find(self, gid: str) -> TransGlobal | None:
        raw = await self._call("GET", self._g(gid))
        return None if raw is None else _decode_global(raw)

    async def load(self, gid: str) -> tuple[TransGlobal | None, list[TransBranch]]:
        reply = await self._run("load", (self._g(gid), self._b(gid)), ())
        if not reply:
            return None, []
        raw, branches = reply
        ops = sorted((_decode_branch(item) for item in branches), key=lambda op: op.id)
        return _decode_global(raw), ops

    async def add_branches(
        self, gid: str, branches: Sequence[TransBranch], *, expect_status: str
    ) -> bool:
        reply = await self._run(
            "add_branches",
            (self._g(gid), self._b(gid), self._counters),
            (expect_status, *_branch_args(gid, branches)),
        )
        if reply is None:
            return False
        now_us, *ids = reply
        _stamp_branches(branches, ids, _time(now_us))
        return True

    async def save_progress(
        self, gid: str, progress: Progress, *, expect_status: str, owner: str | None = None
    ) -> bool:
        changes: dict[str, str | int] = {}
        for name, value in (
            ("status", progress.status),
            ("rollback_reason", progress.rollback_reason),
            ("result", progress.result),
            ("next_cron_interval", progress.next_cron_interval),
            ("owner", progress.owner),
        ):
            if value is not None:
                changes[name] = value
        updates: list[bytes | str] = []
        for update in progress.branches:
            updates.append(_field(update.branch_id, update.op))
            updates.append(update.status)
        delay = progress.next_cron_delay
        saved = await self._run(
            "save_progress",
            (self._g(gid), self._b(gid), self._unfinished, self._finished),
            (
                gid,
                expect_status,
                "0" if owner is None else "1",
                owner or "",
                _encode(changes) if changes else "",
                "" if delay is None else _micros(delay),
                self._ttl,
                *updates,
            ),
        )
        return bool(saved)

    async def lock_due(self, *, owner: str, lease: float, limit: int) -> list[TransGlobal]:
        if limit <= 0:
            return []
        taken = await self._run(
            "lock_due", (self._unfinished,), (self._prefix, owner, _micros(lease), limit)
        )
        return [_decode_global(raw) for raw in taken]

    async def reset_cron_time(self, *, after: float, limit: int) -> tuple[int, bool]:
        if limit <= 0:
            return 0, False
        count = int(
            await self._run(
                "reset_cron_time", (self._unfinished,), (self._prefix, _micros(after), limit)
            )
        )
        return count, count == limit

    async def reset_next_cron_time(self, gid: str) -> bool:
        reset = await self._run("reset_next_cron_time", (self._unfinished,), (self._prefix, gid))
        return bool(reset)

    async def purge_finished(self, *, older_than: float, limit: int) -> int:
        """Delete finished transactions last updated more than `older_than` seconds ago
        and their index entries; returns how many.

        Their records usually expired already (`FinishedDataExpire`), but their entries in
        the `scan` and finished indexes do not expire: this is what removes those.
        """
        if limit <= 0:
            return 0
        count = await self._run(
            "purge_finished",
            (self._finished, self._all),
            (self._prefix, _micros(older_than), limit),
        )
        return int(count)

    async def scan(self, *, position: str, limit: int, where: ScanFilter) -> Page:
        """Newest first by id; `next_position` is the id to continue below.

        With filters a page may hold fewer than `limit` items before the end (at most
        `limit + SCAN_BUDGET` entries are examined per call); only "" means the end.
        """
        start = _position(position)
        if limit <= 0:
            return Page()
        items, next_position = await self._run(
            "scan",
            (self._all,),
            (
                self._prefix,
                start,
                limit,
                limit + SCAN_BUDGET,
                where.status or "",
                where.trans_type or "",
                "" if where.create_time_start is None else _iso(where.create_time_start),
                "" if where.create_time_end is None else _iso(where.create_time_end),
            ),
        )
        return Page([_decode_global(raw) for raw in items], next_position.decode())

    # --- key-value pairs ---------------------------------------------------------------

    async def find_kv(self, cat: str, key: str) -> list[KV]:
        found = await self._run("kv_find", (self._categories,), (self._prefix, cat, key))
        return sorted((_decode_kv(raw) for raw in found), key=lambda kv: kv.id)

    async def scan_kv(self, cat: str, *, position: str, limit: int) -> tuple[list[KV], str]:
        start = _position(position)
        if limit <= 0:
            return [], ""
        found = await self._run("kv_scan", (self._kv(cat), self._kvi(cat)), (start, limit))
        kvs = [_decode_kv(raw) for raw in found if raw is not None]
        return kvs, _next_position([kv.id for kv in kvs], limit)

    async def create_kv(self, cat: str, key: str, value: str) -> bool:
        created = await self._run(
            "kv_create",
            (self._kv(cat), self._kvi(cat), self._categories, self._counters),
            (cat, key, value),
        )
        return bool(created)

    async def update_kv(self, cat: str, key: str, value: str, *, version: int) -> bool:
        updated = await self._run("kv_update", (self._kv(cat),), (key, value, version))
        return bool(updated)

    async def delete_kv(self, cat: str, key: str) -> bool:
        deleted = await self._run(
            "kv_delete", (self._kv(cat), self._kvi(cat), self._categories), (cat, key)
        )
        return bool(deleted)
