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

Redis Cluster (`Store.Host` a list "host1:port1,host2:port2", or one host with
`RedisBuckets` > 1): with N = `RedisBuckets` > 1 each gid hashes (CRC-32) into one of N
buckets, and the keys of bucket k, its transactions with their own `_u`, `_all`, `_f` and
`_ids`, take the prefix `{<prefix without braces>:k}` instead of `p`: one slot per bucket,
so buckets spread over the cluster's nodes. Transaction ids still come from one counter,
`{<prefix without braces>}_ids` field g (one HINCRBY before `create`), because `scan` and
the contract order transactions newest first by id across buckets; branch ids come from
the bucket's counter, striped (counter * N + k) so they stay unique. `lock_due` reads the
earliest due entries of every bucket and lets each bucket's script take its share of the
`limit` (oldest due first over all buckets); `reset_cron_time` and `purge_finished` go
round the buckets from a starting bucket that turns with each call (random at first, so
instances do not all start with the same one); `scan` reads a page of every bucket below
the same position and merges them (the position stays the last id given out). KV pairs
stay in bucket 0. With N = 1 (the default) keys are exactly those above, in the one slot
of the prefix's hash tag, whether Redis is one server or a cluster; N must not change
while transactions are stored.

Scripts that read records named by an index entry (lock_due, scan, reset_cron_time,
purge_finished, kv_find) build those keys from the bucket's prefix rather than declaring
them, since the entries are only known inside the script: Redis Cluster refuses a key in
a slot other than that of the declared keys (or of a node other than its own), and the
hash tag puts every key of a bucket in its declared index's slot.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import zlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Final

import msgspec
import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.maint_notifications import MaintNotificationsConfig

from dtm.protocol.consts import FINISHED
from dtm.protocol.records import KV, TransBranch, TransGlobal
from dtm.server.config import StoreConfig
from dtm.server.stores.base import Page, Progress, ScanFilter, Store, StoreUnavailable
from dtm.server.stores.rows import next_position, progress_columns, stamp_branches

__all__ = ["RedisStore"]

# Pipelines in flight at once, each on its own connection: `MaxOpenConns` (upstream's default
# is 500) capped at this. Redis runs commands on one thread, so a few pipelines keep it busy.
MAX_PIPELINES: Final = 4
# Commands sent in one pipeline at most.
MAX_BATCH: Final = 256
# Seconds to connect, to wait for an answer, and to wait for a free pooled connection.
CONNECT_TIMEOUT: Final = 5.0
COMMAND_TIMEOUT: Final = 10.0
# Rounds one `lock_due` over several buckets makes at most while others take what it saw.
LOCK_ROUNDS: Final = 4
# Index entries one `scan` call examines beyond `limit` before it returns a short page.
SCAN_BUDGET: Final = 1000

_SCRIPTS: Final = (
    "create",
    "add_branches",
    "load",
    "save_progress",
    "lock_due",
    "due_head",
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


def _position(position: str) -> str:
    """A position as a score; ValueError for one this store never gave out."""
    return str(int(position)) if position else ""


def _nodes(conf: StoreConfig) -> list[tuple[str, int]]:
    """The hosts of `Store.Host`: one (with `Port`), or the `host:port` list of a cluster."""
    if "," not in conf.Host:
        return [(conf.Host or "127.0.0.1", conf.Port or 6379)]
    nodes: list[tuple[str, int]] = []
    for entry in conf.Host.split(","):
        host, sep, port = entry.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(
                f"Store.Host: a Redis Cluster is a list of host:port entries, got {entry!r}"
            )
        nodes.append((host, int(port)))
    return nodes


def _core(prefix: str) -> str:
    """The prefix without braces, to put in hash tags of its own."""
    return prefix.replace("{", "").replace("}", "")


def _bucket_prefixes(prefix: str, buckets: int) -> list[str]:
    """The key prefix of each bucket: the prefix itself for one bucket (today's keys), or
    a hash tag of its own per bucket."""
    if buckets == 1:
        return [prefix]
    core = _core(prefix)
    return [f"{{{core}:{bucket}}}" for bucket in range(buckets)]


class _Bucket:
    """The keys of one bucket's indexes and counters (all in its one slot)."""

    __slots__ = ("all", "counters", "finished", "number", "prefix", "unfinished")

    def __init__(self, prefix: str, number: int) -> None:
        self.prefix = prefix
        self.number = number
        self.unfinished = f"{prefix}_u"
        self.all = f"{prefix}_all"
        self.finished = f"{prefix}_f"
        self.counters = f"{prefix}_ids"


def _pairs(reply: Any) -> list[tuple[str, float]]:
    """(member, score) of a ZRANGE ... WITHSCORES reply, flat or paired (clients differ)."""
    if reply and isinstance(reply[0], (list, tuple)):
        return [(member.decode(), float(score)) for member, score in reply]
    return [
        (member.decode(), float(score))
        for member, score in zip(reply[::2], reply[1::2], strict=True)
    ]


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
        client: aioredis.Redis | RedisCluster,
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

    `conf` gives Host, Port, User, Password, RedisPrefix, RedisBuckets, FinishedDataExpire
    (seconds a finished transaction is kept; 0 keeps it until `purge_finished`) and
    MaxOpenConns (capped at `MAX_PIPELINES`). A Host listing several `host:port` entries
    is a Redis Cluster.

    Calls of concurrent callers share pipelines (see `_AutoPipeline`); each call is still
    one script, atomic on its own.
    """

    def __init__(self, conf: StoreConfig) -> None:
        if conf.RedisBuckets < 1:
            raise ValueError("Store.RedisBuckets should be at least 1")
        self._nodes = _nodes(conf)
        self._conf = conf
        self._prefix = conf.RedisPrefix
        self._ttl = max(conf.FinishedDataExpire, 0)
        self._client: aioredis.Redis | RedisCluster | None = None
        self._pipeline: _AutoPipeline | None = None
        self._scripts = {name: _lua(name) for name in _SCRIPTS}
        self._shas = {
            name: hashlib.sha1(text.encode()).hexdigest() for name, text in self._scripts.items()
        }
        self._buckets = [
            _Bucket(prefix, number)
            for number, prefix in enumerate(_bucket_prefixes(self._prefix, conf.RedisBuckets))
        ]
        # Where the cron's next round over the buckets starts: spread over instances, and
        # turned by each round, so that no bucket is always served first.
        self._turn = random.randrange(len(self._buckets))
        # With several buckets, ids of transactions come from one counter, outside them:
        # `scan` merges the buckets newest first by id, as one sequence orders them.
        self._sequence = f"{{{_core(self._prefix)}}}_ids" if len(self._buckets) > 1 else ""
        # KV pairs live in bucket 0 (the prefix itself with one bucket).
        self._kv_prefix = self._buckets[0].prefix
        self._kv_counters = self._buckets[0].counters
        self._categories = f"{self._kv_prefix}_kvc"

    @property
    def prefix(self) -> str:
        """The prefix of every key this store uses."""
        return self._prefix

    @property
    def key_prefixes(self) -> list[str]:
        """The prefix of each bucket's keys (the prefix itself with one bucket)."""
        return [bucket.prefix for bucket in self._buckets]

    @property
    def client_name(self) -> str:
        """The name its connections give themselves (CLIENT LIST shows it)."""
        return f"dtm-py:{self._prefix}"

    # --- connection ----------------------------------------------------------------

    async def open(self) -> None:
        conf = self._conf
        lanes = max(1, min(conf.MaxOpenConns, MAX_PIPELINES))
        if len(self._nodes) > 1:
            await self._open_cluster(lanes)
            return
        host, port = self._nodes[0]
        pool = aioredis.BlockingConnectionPool(
            host=host,
            port=port,
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

    async def _open_cluster(self, lanes: int) -> None:
        conf = self._conf
        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self._nodes],
            username=conf.User or None,
            password=conf.Password or None,
            client_name=self.client_name,
            # Per node. The cluster client refuses, rather than waits, past it; each lane
            # holds one connection per node at most, scripts are loaded between pipelines.
            max_connections=lanes + 1,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            # No retries, as for one server (a lost answer may hide an applied write);
            # MOVED and ASK redirections are still followed.
            retry=Retry(NoBackoff(), 0),
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        try:
            await client.initialize()
            await client.ping()
            # SCRIPT LOAD goes to every primary; a node that restarts, or a primary a
            # failover makes, answers NOSCRIPT and gets them again (see `_AutoPipeline`).
            await self._load_scripts(client)
        except BaseException as exc:
            await client.aclose()
            error = _unavailable(exc)
            if error is exc and not isinstance(exc, rexc.RedisClusterException):
                raise
            raise StoreUnavailable(f"redis cluster at {conf.Host}: {exc}") from exc
        self._client = client
        self._pipeline = _AutoPipeline(
            client, lanes=lanes, reload_scripts=lambda: self._load_scripts(client)
        )

    async def _load_scripts(self, client: aioredis.Redis | RedisCluster) -> None:
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
        if isinstance(self._client, RedisCluster):
            # PING has no key: the cluster client sends it to every node, outside pipelines.
            try:
                await self._client.ping()
            except Exception as exc:
                error = _unavailable(exc)
                if error is exc:
                    raise
                raise error from exc
            return
        await self._call("PING")

    # --- keys ------------------------------------------------------------------------

    def _bucket(self, gid: str) -> _Bucket:
        buckets = self._buckets
        if len(buckets) == 1:
            return buckets[0]
        return buckets[zlib.crc32(gid.encode()) % len(buckets)]

    def _g(self, gid: str) -> str:
        return f"{self._bucket(gid).prefix}_g_{gid}"

    def _b(self, gid: str) -> str:
        return f"{self._bucket(gid).prefix}_b_{gid}"

    def _stripe(self, bucket: _Bucket) -> tuple[int, int]:
        """(stride, offset) of the bucket's ids."""
        return len(self._buckets), bucket.number

    def _round(self) -> list[_Bucket]:
        """Every bucket once, from the turn's one on."""
        buckets = self._buckets
        start = self._turn
        self._turn = (start + 1) % len(buckets)
        return buckets[start:] + buckets[:start]

    def _kv(self, cat: str) -> str:
        return f"{self._kv_prefix}_kv_{cat}"

    def _kvi(self, cat: str) -> str:
        return f"{self._kv_prefix}_kvi_{cat}"

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
        bucket = self._bucket(gid)
        trans_id = ""
        if self._sequence:
            trans_id = str(await self._call("HINCRBY", self._sequence, "g", 1))
        reply = await self._run(
            "create",
            (
                self._g(gid),
                self._b(gid),
                bucket.unfinished,
                bucket.all,
                bucket.finished,
                bucket.counters,
            ),
            (
                gid,
                delay,
                "1" if trans.status in FINISHED else "0",
                self._ttl,
                _encode(body),
                *self._stripe(bucket),
                trans_id,
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
        stamp_branches(branches, ids, now)
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
        bucket = self._bucket(gid)
        reply = await self._run(
            "add_branches",
            (self._g(gid), self._b(gid), bucket.counters),
            (expect_status, *self._stripe(bucket), *_branch_args(gid, branches)),
        )
        if reply is None:
            return False
        now_us, *ids = reply
        stamp_branches(branches, ids, _time(now_us))
        return True

    async def save_progress(
        self, gid: str, progress: Progress, *, expect_status: str, owner: str | None = None
    ) -> bool:
        changes = progress_columns(progress)
        updates: list[bytes | str] = []
        for update in progress.branches:
            updates.append(_field(update.branch_id, update.op))
            updates.append(update.status)
        delay = progress.next_cron_delay
        bucket = self._bucket(gid)
        saved = await self._run(
            "save_progress",
            (self._g(gid), self._b(gid), bucket.unfinished, bucket.finished),
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
        if len(self._buckets) == 1:
            bucket = self._buckets[0]
            got = await self._run(
                "lock_due", (bucket.unfinished,), (bucket.prefix, owner, _micros(lease), limit)
            )
            return [_decode_global(raw) for raw in got]
        taken: list[TransGlobal] = []
        for _ in range(LOCK_ROUNDS):
            got = await self._lock_due_round(owner=owner, lease=lease, limit=limit - len(taken))
            if got is None:
                break
            taken.extend(got)
            if len(taken) >= limit:
                break
        return taken

    async def _lock_due_round(
        self, *, owner: str, lease: float, limit: int
    ) -> list[TransGlobal] | None:
        """One `lock_due` over several buckets, oldest due first; None when none is due.

        The `limit` earliest due entries of all due indexes say how many each bucket's
        script may take; each script takes its bucket's earliest due entries when it runs,
        atomically, so concurrent callers never share one, and one that loses a race (gets
        fewer) goes round again.
        """
        heads = await asyncio.gather(
            *(self._run("due_head", (bucket.unfinished,), (limit,)) for bucket in self._buckets)
        )
        pairs = [_pairs(head) for head in heads]
        entries = sorted(
            (score, bucket.number)
            for bucket, head in zip(self._buckets, pairs, strict=True)
            for _, score in head
        )
        if not entries:
            return None
        shares: dict[int, int] = {}
        for _, number in entries[:limit]:
            shares[number] = shares.get(number, 0) + 1
        got = await asyncio.gather(
            *(
                self._run(
                    "lock_due",
                    (self._buckets[number].unfinished,),
                    (self._buckets[number].prefix, owner, _micros(lease), share),
                )
                for number, share in shares.items()
            )
        )
        due = {gid: score for head in pairs for gid, score in head}
        taken = [_decode_global(raw) for part in got for raw in part]
        taken.sort(key=lambda trans: due.get(trans.gid, float("inf")))
        return taken

    async def reset_cron_time(self, *, after: float, limit: int) -> tuple[int, bool]:
        if limit <= 0:
            return 0, False
        count = 0
        for bucket in self._round():
            count += int(
                await self._run(
                    "reset_cron_time",
                    (bucket.unfinished,),
                    (bucket.prefix, _micros(after), limit - count),
                )
            )
            if count >= limit:
                break
        return count, count == limit

    async def reset_next_cron_time(self, gid: str) -> bool:
        bucket = self._bucket(gid)
        reset = await self._run("reset_next_cron_time", (bucket.unfinished,), (bucket.prefix, gid))
        return bool(reset)

    async def purge_finished(self, *, older_than: float, limit: int) -> int:
        """Delete finished transactions last updated more than `older_than` seconds ago
        and their index entries; returns how many.

        Their records usually expired already (`FinishedDataExpire`), but their entries in
        the `scan` and finished indexes do not expire: this is what removes those.
        """
        if limit <= 0:
            return 0
        count = 0
        for bucket in self._round():
            count += int(
                await self._run(
                    "purge_finished",
                    (bucket.finished, bucket.all),
                    (bucket.prefix, _micros(older_than), limit - count),
                )
            )
            if count >= limit:
                break
        return count

    async def scan(self, *, position: str, limit: int, where: ScanFilter) -> Page:
        """Newest first by id; `next_position` is the id to continue below.

        With filters a page may hold fewer than `limit` items before the end (at most
        `limit + SCAN_BUDGET` entries are examined per call); only "" means the end.
        """
        if len(self._buckets) > 1:
            return await self._scan_buckets(position=position, limit=limit, where=where)
        start = _position(position)
        if limit <= 0:
            return Page()
        items, after = await self._scan_bucket(self._buckets[0], start, limit, where)
        return Page([_decode_global(raw) for raw in items], after.decode())

    async def _scan_bucket(
        self, bucket: _Bucket, start: str, limit: int, where: ScanFilter
    ) -> tuple[list[bytes], bytes]:
        reply: tuple[list[bytes], bytes] = await self._run(
            "scan",
            (bucket.all,),
            (
                bucket.prefix,
                start,
                limit,
                limit + SCAN_BUDGET,
                where.status or "",
                where.trans_type or "",
                "" if where.create_time_start is None else _iso(where.create_time_start),
                "" if where.create_time_end is None else _iso(where.create_time_end),
            ),
        )
        return reply

    async def _scan_buckets(self, *, position: str, limit: int, where: ScanFilter) -> Page:
        """`scan` over several buckets: a page of each from the same position, merged
        newest first (ids come from one sequence, see `_sequence`).

        A bucket's page may stop short of `limit` (its budget) at an id above entries it
        has not examined, so only items above the highest such stop are given out; the
        next position is, as with one bucket, the last id given out when the page is full,
        else that stop ("" when every bucket reached its end).
        """
        start = _position(position)
        if limit <= 0:
            return Page()
        pages = await asyncio.gather(
            *(self._scan_bucket(bucket, start, limit, where) for bucket in self._buckets)
        )
        stop = -1
        found: list[TransGlobal] = []
        for items, reached in pages:
            if reached:
                stop = max(stop, int(reached))
            found.extend(_decode_global(raw) for raw in items)
        found.sort(key=lambda trans: trans.id, reverse=True)
        given = [trans for trans in found if trans.id >= stop][:limit]
        if len(given) == limit:
            return Page(given, str(given[-1].id))
        return Page(given, "" if stop == -1 else str(stop))

    # --- key-value pairs ---------------------------------------------------------------

    async def find_kv(self, cat: str, key: str) -> list[KV]:
        found = await self._run("kv_find", (self._categories,), (self._kv_prefix, cat, key))
        return sorted((_decode_kv(raw) for raw in found), key=lambda kv: kv.id)

    async def scan_kv(self, cat: str, *, position: str, limit: int) -> tuple[list[KV], str]:
        start = _position(position)
        if limit <= 0:
            return [], ""
        found = await self._run("kv_scan", (self._kv(cat), self._kvi(cat)), (start, limit))
        kvs = [_decode_kv(raw) for raw in found if raw is not None]
        return kvs, next_position([kv.id for kv in kvs], limit)

    async def create_kv(self, cat: str, key: str, value: str) -> bool:
        created = await self._run(
            "kv_create",
            (self._kv(cat), self._kvi(cat), self._categories, self._kv_counters),
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
