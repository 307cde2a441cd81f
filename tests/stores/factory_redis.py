"""The Redis store over a key prefix private to the test, on the Redis of this machine.

The prefix is `{t<hash of tmp>}`; the first call for a tmp path deletes whatever keys the
prefix has, and forgets prefixes of earlier runs whose tmp directory pytest has removed
since, so runs do not pile up keys in a Redis that keeps everything.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import redis

from dtm.server.config import StoreConfig
from dtm.server.stores.base import Store
from dtm.server.stores.redis import RedisStore

HOST = os.environ.get("DTM_TEST_REDIS_HOST", "127.0.0.1")
PORT = int(os.environ.get("DTM_TEST_REDIS_PORT", "6379"))
# prefix -> tmp path of every test prefix in use: what later runs clean up.
REGISTRY = "dtm-py-tests:prefixes"

_cleared: set[str] = set()


def prefix_of(tmp: Path) -> str:
    return "{t" + hashlib.sha1(str(tmp).encode()).hexdigest()[:16] + "}"


def config(tmp: Path, **changes: object) -> StoreConfig:
    """The store configuration `make` uses, with some keys changed."""
    values: dict[str, object] = {
        "Driver": "redis",
        "Host": HOST,
        "Port": PORT,
        "RedisPrefix": prefix_of(tmp),
    }
    values.update(changes)
    return StoreConfig(**values)  # type: ignore[arg-type]


def _delete_prefix(client: redis.Redis, prefix: str) -> None:
    # Redis's glob treats [, ], *, ? and \ specially; the prefix has none of them.
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


def clear(tmp: Path) -> None:
    """Delete the test's keys and those of tests whose tmp directory is gone."""
    prefix = prefix_of(tmp)
    with redis.Redis(host=HOST, port=PORT) as client:
        for old, path in client.hgetall(REGISTRY).items():
            if not Path(path.decode()).exists():
                _delete_prefix(client, old.decode())
                client.hdel(REGISTRY, old)
        _delete_prefix(client, prefix)
        client.hset(REGISTRY, prefix, str(tmp))


def make(tmp: Path) -> Store:
    if str(tmp) not in _cleared:
        _cleared.add(str(tmp))
        clear(tmp)
    return RedisStore(config(tmp))
