"""Durable stores behind one contract (`base.Store`); `make_store` picks one by driver."""

from __future__ import annotations

import importlib

from dtm.server.config import StoreConfig
from dtm.server.stores.base import Store

# Server stores by driver: module and class, imported on demand so that a server on one
# store loads no other driver.
_SERVER_STORES = {
    "mysql": ("dtm.server.stores.mysql", "MysqlStore"),
    "postgres": ("dtm.server.stores.postgres", "PostgresStore"),
    "redis": ("dtm.server.stores.redis", "RedisStore"),
}


def make_store(conf: StoreConfig) -> Store:
    """The store named by `Store.Driver`; upstream's embedded `boltdb` maps to SQLite."""
    if conf.Driver in ("sqlite", "boltdb"):
        from dtm.server.stores.sqlite import SqliteStore

        return SqliteStore(conf.Path, synchronous=conf.Synchronous.upper())
    if conf.Driver not in _SERVER_STORES:
        raise ValueError(f"unknown store driver {conf.Driver!r}")
    module_name, class_name = _SERVER_STORES[conf.Driver]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"store driver {conf.Driver!r} is not available: {exc}") from None
    store: Store = getattr(module, class_name)(conf)
    return store
