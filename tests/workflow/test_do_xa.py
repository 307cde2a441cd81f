"""`Workflow.do_xa`: workflow branches in XA transactions, against the real server, MariaDB
(asyncmy, async workflow) and a private PostgreSQL with prepared transactions (psycopg, a
blocking workflow)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import asyncmy
import pytest

from dtm.errors import FailureError
from dtm.workflow import SyncWorkflow, Workflow, Workflows
from dtm.xa import xa_local
from tests.harness import DtmServer, Endpoints
from tests.services import PostgresService, service_fixture
from tests.xa.conftest import MYSQL, Db, XaPostgresService, cleanup, make_db

xa_postgres = service_fixture(XaPostgresService)


@pytest.fixture(params=["mysql", "postgres"])
def db(request: pytest.FixtureRequest, xa_postgres: PostgresService) -> Iterator[Db]:
    d = make_db(request.param, xa_postgres)
    d.run(f"create table {d.table} (id int primary key, amount int not null)")
    yield d
    assert cleanup(d) == [], "the test left xids prepared"


def register(workflows: Workflows, db: Db, *, fail_second: bool = False) -> None:
    """Workflow "xa": two do_xa branches inserting rows 1 and 2; async over asyncmy on
    MariaDB, blocking over psycopg on PostgreSQL."""
    insert = f"insert into {db.table} (id, amount) values (%s, 0)"
    if db.name == "mysql":

        async def connect() -> Any:
            params = {k: v for k, v in MYSQL.items() if k != "database"}
            return await asyncmy.connect(**params, db=MYSQL["database"])

        def row(row_id: int) -> Any:
            async def fn(conn: Any) -> bytes:
                if fail_second and row_id == 2:
                    raise FailureError("no second row")
                async with conn.cursor() as cur:
                    await cur.execute(insert, (row_id,))
                return f"row {row_id}".encode()

            return fn

        @workflows.register("xa")
        async def async_flow(wf: Workflow, data: bytes) -> bytes:
            one = await wf.do_xa(connect, row(1))
            two = await wf.do_xa(connect, row(2))
            return one + b"," + two

        return

    def sync_row(row_id: int) -> Any:
        def fn(conn: Any) -> bytes:
            if fail_second and row_id == 2:
                raise FailureError("no second row")
            conn.execute(insert, (row_id,))
            return f"row {row_id}".encode()

        return fn

    @workflows.register("xa")
    def sync_flow(wf: SyncWorkflow, data: bytes) -> bytes:
        one = wf.do_xa(db.connect, sync_row(1))
        two = wf.branch().do_xa(db.connect, sync_row(2))
        return one + b"," + two


async def test_success_commits_every_xa_branch(dtm: DtmServer, busi: Endpoints, db: Db) -> None:
    gid = db.gid()  # MySQL's xid takes 64 bytes: the `gid` fixture is too long
    async with Workflows(dtm.api, callback_url=busi.url("callback")) as workflows:
        register(workflows, db)
        assert await workflows.execute("xa", gid) == b"row 1,row 2"

    assert db.ids() == [1, 2]
    assert db.prepared() == []
    trans = dtm.query(gid)["transaction"]
    assert (trans["status"], base64.b64decode(trans["result"])) == ("succeed", b"row 1,row 2")
    assert dtm.branch_rows(gid) == [
        ("01", "business", "succeed"),
        ("01", "action", "succeed"),
        ("02", "business", "succeed"),
        ("02", "action", "succeed"),
        ("02", "commit", "succeed"),
        ("01", "commit", "succeed"),
    ]


async def test_failure_rolls_back_the_prepared_branches(
    dtm: DtmServer, busi: Endpoints, db: Db
) -> None:
    gid = db.gid()  # MySQL's xid takes 64 bytes: the `gid` fixture is too long
    async with Workflows(dtm.api, callback_url=busi.url("callback")) as workflows:
        register(workflows, db, fail_second=True)
        with pytest.raises(FailureError, match="no second row"):
            await workflows.execute("xa", gid)

    assert db.ids() == []
    assert db.prepared() == []
    assert dtm.status(gid) == "failed"
    recorded = dtm.branch_rows(gid)
    assert ("01", "rollback", "succeed") in recorded
    assert ("02", "action", "failed") in recorded


async def test_a_step_that_may_have_prepared_is_not_redone(
    dtm: DtmServer, busi: Endpoints, db: Db
) -> None:
    """A run died between recording "business" (inside the XA transaction) and recording
    the action: the resumed run cannot tell whether the xid was prepared, so it fails the
    workflow and rolls the xid back."""
    gid = db.gid()  # MySQL's xid takes 64 bytes: the `gid` fixture is too long
    runs: list[int] = []
    async with Workflows(dtm.api, callback_url=busi.url("callback")) as workflows:

        @workflows.register("dies")
        def dies(wf: SyncWorkflow, data: bytes) -> bytes:
            runs.append(1)
            if len(runs) == 1:
                raise RuntimeError("the process dies")
            return wf.do_xa(db.connect, lambda conn: str(db.insert(1)(conn)))

        with pytest.raises(RuntimeError, match="dies"):
            await workflows.execute("dies", gid)
        # Stage what the dead run left: its marker recorded, its xid prepared.
        body = {
            "gid": gid,
            "trans_type": "workflow",
            "branch_id": "01",
            "op": "business",
            "status": "succeed",
            "data": "",
        }
        assert dtm.post("registerBranch", body).status_code == 200
        conn = db.connect_fn()
        xa_local(conn, gid, "01", db.insert(7))
        conn.close()
        assert db.prepared() == [f"{gid}-01"]

        with pytest.raises(FailureError, match="not resumable"):
            await workflows.execute("dies", gid)

    assert dtm.status(gid) == "failed"
    assert db.prepared() == []
    assert db.ids() == []
    assert ("01", "rollback", "succeed") in dtm.branch_rows(gid)
