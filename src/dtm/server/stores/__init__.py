"""Durable stores behind one contract (`base.Store`); `make_store` picks one by driver."""

from __future__ import annotations

from dtm.server.config import StoreConfig
from dtm.server.stores.base import Store


def make_store(conf: StoreConfig) -> Store:
    """The store named by `Store.Driver`; upstream's embedded `boltdb` maps to SQLite."""
    if conf.Driver in ("sqlite", "boltdb"):
        from dtm.server.stores.sqlite import SqliteStore

        return SqliteStore(conf.Path, synchronous=conf.Synchronous.upper())
    raise NotImplementedError(f"store driver {conf.Driver!r} is not available yet")
