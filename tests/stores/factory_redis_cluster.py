"""The Redis store in cluster mode, on a private 3-master Redis Cluster on loopback.

The cluster starts on the first call and lives for the test session (an atexit hook stops
it); each test has a key prefix of its own, `{t<hash of tmp>}`, spread over `BUCKETS`
buckets, so no keys need clearing.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from dtm.server.config import StoreConfig
from dtm.server.stores.base import Store
from dtm.server.stores.redis import RedisStore
from tests.services import RedisClusterService
from tests.stores.factory_redis import prefix_of

BUCKETS = 8

# The session's cluster once started (a list, so that no `global` statement is needed).
_started: list[RedisClusterService] = []


def cluster() -> RedisClusterService:
    """The session's cluster, started on first use."""
    if not _started:
        workdir = Path(tempfile.mkdtemp(prefix="dtm-redis-cluster-"))
        service = RedisClusterService(workdir).start()
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
        atexit.register(service.close)
        _started.append(service)
    return _started[0]


def config(tmp: Path, **changes: object) -> StoreConfig:
    """The store configuration `make` uses, with some keys changed."""
    values: dict[str, object] = {
        "Driver": "redis",
        "Host": cluster().hosts,
        "Port": 0,
        "RedisPrefix": prefix_of(tmp),
        "RedisBuckets": BUCKETS,
    }
    values.update(changes)
    return StoreConfig(**values)  # type: ignore[arg-type]


def make(tmp: Path) -> Store:
    return RedisStore(config(tmp))
