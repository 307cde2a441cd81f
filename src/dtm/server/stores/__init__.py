"""Durable stores behind one contract (`base.Store`); `make_store` picks one by driver."""

from __future__ import annotations

from dtm.server.config import StoreConfig
from dtm.server.stores.base import Store


def make_store(conf: StoreConfig) -> Store:
    """The store named by `Store.Driver`; upstream's embedded `boltdb` maps to SQLite.

    Backends are imported on demand: a server on one store loads no other driver.
    """
    if conf.Driver in ("sqlite", "boltdb"):
        from dtm.server.stores.sqlite import SqliteStore

        return SqliteStore(conf.Path, synchronous=conf.Synchronous.upper())
    if conf.Driver == "mysql":
        from dtm.server.stores.mysql import MysqlStore

        return MysqlStore(conf)
    if conf.Driver == "postgres":
        from dtm.server.stores.postgres import PostgresStore

        return PostgresStore(conf)
    if conf.Driver == "redis":
        from dtm.server.stores.redis import RedisStore

        return RedisStore(conf)
    raise ValueError(f"unknown store driver {conf.Driver!r}")
