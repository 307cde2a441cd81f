"""The barrier inside Django's `transaction.atomic()`, on real SQLite databases: the default
connection and a second alias, configured here with the least settings Django needs."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import django
import pytest
from django.conf import settings
from django.db import connections, transaction
from django.utils.functional import empty

from dtm.barrier import BranchBarrier
from dtm.barrier import django as dj_barrier
from dtm.errors import DuplicateError, FailureError


@pytest.fixture(scope="module", autouse=True)
def django_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Two SQLite databases, "default" and "other". Django's settings are process-global:
    configured here only for this module and unconfigured after it, so another module
    (tests/web/test_django.py) can configure its own."""
    folder = tmp_path_factory.mktemp("django")
    databases = {
        name: {"ENGINE": "django.db.backends.sqlite3", "NAME": str(folder / f"{name}.db")}
        for name in ("default", "other")
    }
    ours = not settings.configured
    if ours:
        settings.configure(DATABASES=databases, INSTALLED_APPS=[], LOGGING_CONFIG=None)
        django.setup()
    else:
        previous = settings.DATABASES
        settings.DATABASES = databases
    _forget_connections()
    yield
    _forget_connections()
    if ours:
        settings._wrapped = empty
    else:
        settings.DATABASES = previous


def _forget_connections() -> None:
    """Make Django re-read DATABASES and open new connections."""
    connections.close_all()
    for alias in list(connections.settings):
        with contextlib.suppress(AttributeError):  # never opened in this thread
            del connections[alias]
    connections._settings = None
    connections.__dict__.pop("settings", None)


@pytest.fixture(params=["default", "other"])
def alias(request: pytest.FixtureRequest) -> Iterator[str]:
    name: str = request.param
    dj_barrier.create_table(using=name)
    dj_barrier.create_table(using=name)  # idempotent
    with connections[name].cursor() as cur:
        cur.execute("drop table if exists busi")
        cur.execute("create table busi (id int primary key, amount int not null)")
        cur.execute("insert into busi values (1, 0)")
        cur.execute("delete from barrier")
    yield name
    connections[name].close()


def amount(alias: str) -> int:
    """Read as another process would: through a connection of its own."""
    conn = sqlite3.connect(connections[alias].settings_dict["NAME"], timeout=30)
    try:
        return int(conn.execute("select amount from busi where id = 1").fetchone()[0])
    finally:
        conn.close()


def barrier_rows(alias: str) -> int:
    conn = sqlite3.connect(connections[alias].settings_dict["NAME"], timeout=30)
    try:
        return int(conn.execute("select count(*) from barrier").fetchone()[0])
    finally:
        conn.close()


def deposit(delta: int = 10) -> Callable[[Any], str]:
    def fn(conn: Any) -> str:
        with conn.cursor() as cur:
            cur.execute("update busi set amount = amount + %s where id = 1", [delta])
        return "done"

    return fn


def failing(conn: Any) -> str:
    deposit()(conn)
    raise RuntimeError("business failed")


def bb(op: str = "action", gid: str | None = None) -> BranchBarrier:
    return BranchBarrier("saga", gid or f"gid-{uuid.uuid4().hex}", "01", op)


def call(alias: str, barrier: BranchBarrier, fn: Callable[[Any], str]) -> str | None:
    # The default alias through `using=None`, the other one by name.
    return dj_barrier.call(barrier, fn, using=None if alias == "default" else alias)


def test_outside_atomic_the_barrier_commits(alias: str) -> None:
    gid = f"gid-{uuid.uuid4().hex}"
    assert call(alias, bb(gid=gid), deposit()) == "done"
    assert not connections[alias].in_atomic_block
    assert call(alias, bb(gid=gid), deposit()) is None
    assert amount(alias) == 10
    assert barrier_rows(alias) == 1


def test_inside_atomic_nothing_is_committed_before_the_caller(alias: str) -> None:
    with transaction.atomic(using=alias):
        assert call(alias, bb(), deposit()) == "done"
        assert connections[alias].in_atomic_block
        assert amount(alias) == 0
    assert amount(alias) == 10


def test_caller_rollback_takes_the_barrier_rows_too(alias: str) -> None:
    barrier = bb()
    with pytest.raises(KeyError), transaction.atomic(using=alias):
        call(alias, barrier, deposit())
        raise KeyError("caller changed its mind")
    assert amount(alias) == 0
    assert barrier_rows(alias) == 0
    assert call(alias, BranchBarrier("saga", barrier.gid, "01", "action"), deposit()) == "done"


def test_nested_savepoint_rolled_back_on_error(alias: str) -> None:
    gid = f"gid-{uuid.uuid4().hex}"
    with transaction.atomic(using=alias):
        deposit(1)(connections[alias])
        with pytest.raises(RuntimeError):
            call(alias, bb(gid=gid), failing)
        assert call(alias, bb(gid=gid), deposit(100)) == "done"
    assert amount(alias) == 101
    assert barrier_rows(alias) == 1


def test_null_compensation_blocks_the_late_action(alias: str) -> None:
    gid = f"gid-{uuid.uuid4().hex}"
    assert call(alias, bb("compensate", gid), deposit()) is None
    assert call(alias, bb("action", gid), deposit()) is None
    assert amount(alias) == 0


def test_query_prepared(alias: str) -> None:
    using = None if alias == "default" else alias
    done = BranchBarrier("msg", f"gid-{uuid.uuid4().hex}", "00", "msg")
    dj_barrier.call(done, deposit(), using=using)
    dj_barrier.query_prepared(done, using=using)
    lost = BranchBarrier("msg", f"gid-{uuid.uuid4().hex}", "00", "msg")
    with pytest.raises(FailureError):
        dj_barrier.query_prepared(lost, using=using)
    with pytest.raises(DuplicateError):
        dj_barrier.call(lost, deposit(), using=using)
    assert amount(alias) == 10
