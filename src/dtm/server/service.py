"""The server's use cases, independent of transport: HTTP today, gRPC and JSON-RPC later.

Each method validates, writes what must be durable before answering, and starts a pass
where upstream would. Errors are the shared vocabulary: `BadRequest` (400), `LookupError`
(404), `FailureError` (409), `OngoingError` (425), `StoreUnavailable` (503).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from dtm.errors import FailureError, OngoingError
from dtm.protocol import consts
from dtm.protocol.messages import TransRequest, decode_options
from dtm.protocol.records import KV, TransBranch, TransGlobal
from dtm.server import intake, topics
from dtm.server.engine.schedule import Schedule
from dtm.server.processor import Processor
from dtm.server.stores.base import Page, Progress, ScanFilter, Store, StoreUnavailable

log = logging.getLogger(__name__)

# How long a `wait_result` submit waits beyond one branch call before answering ONGOING.
_WAIT_MARGIN = 2.0
_POLL = 0.05


@dataclass(frozen=True, slots=True)
class Query:
    transaction: TransGlobal | None
    branches: list[TransBranch]


class Service:
    """Use cases of the DTM server API."""

    def __init__(
        self, store: Store, processor: Processor, schedule: Schedule, *, timeout_to_fail: int
    ) -> None:
        self.store = store
        self.processor = processor
        self.schedule = schedule
        self.timeout_to_fail = timeout_to_fail

    @staticmethod
    def new_gid() -> str:
        return uuid.uuid4().hex

    # --- global transactions ----------------------------------------------------------

    async def prepare(self, req: TransRequest) -> None:
        trans, branches, options = await intake.new_transaction(self.store, req, consts.PREPARED)
        first = self.schedule.base_interval(options)
        trans.next_cron_interval = first
        if await self.store.create(trans, branches, next_cron_delay=float(first)):
            return
        existing = await self._existing(trans.gid, trans.trans_type)
        if existing.status != consts.PREPARED:
            raise FailureError(f"current status '{existing.status}', cannot prepare")

    async def submit(self, req: TransRequest) -> None:
        if req.trans_type == consts.WORKFLOW:
            await self._submit_workflow(req)
            return
        trans, branches, options = await intake.new_transaction(self.store, req, consts.SUBMITTED)
        owner = self.processor.new_owner()
        trans.owner = owner
        trans.next_cron_interval = self.schedule.base_interval(options)
        delay = intake.msg_delay(trans)
        lease = float(delay) if delay else self.schedule.lease(options)
        task: asyncio.Future[TransGlobal] | None = None
        if await self.store.create(trans, branches, next_cron_delay=lease):
            if not delay:  # a delayed message is left to the recovery loop until due
                task = self.processor.start(trans, branches, owner)
        else:
            task = await self._submit_existing(trans.gid, trans.trans_type, owner)
        if req.wait_result:
            await self._wait(trans.gid, task, options.request_timeout)

    async def _submit_existing(
        self, gid: str, trans_type: str, owner: str
    ) -> asyncio.Future[TransGlobal] | None:
        """Submit of a prepared transaction, or a repeated submit (which starts nothing:
        the transaction already has a processor, here or on another instance)."""
        for _ in range(3):
            existing, branches = await self.store.load(gid)
            if existing is None:
                raise StoreUnavailable(f"transaction {gid} vanished while submitting")
            if existing.trans_type != trans_type:
                raise FailureError(
                    f"gid {gid} belongs to a {existing.trans_type} transaction, not {trans_type}"
                )
            if existing.status == consts.SUBMITTED:
                return self.processor.active.get(gid)
            if existing.status != consts.PREPARED:
                raise FailureError(f"current status '{existing.status}', cannot submit")
            options = decode_options(existing.options)
            interval = self.schedule.base_interval(options)
            progress = Progress(
                status=consts.SUBMITTED,
                owner=owner,
                next_cron_interval=interval,
                next_cron_delay=self.schedule.lease(options),
            )
            if await self.store.save_progress(gid, progress, expect_status=consts.PREPARED):
                existing.status, existing.owner = consts.SUBMITTED, owner
                existing.next_cron_interval = interval
                return self.processor.start(existing, branches, owner)
        raise OngoingError(f"transaction {gid} is changing concurrently, try again")

    async def _wait(
        self, gid: str, task: asyncio.Future[TransGlobal] | None, request_timeout: int
    ) -> None:
        """Answer a `wait_result` submit: SUCCESS, FAILURE with the reason, or ONGOING
        when the outcome is not known yet (upstream wrongly answers FAILURE then)."""
        limit = (request_timeout or self.schedule.request_timeout) + _WAIT_MARGIN
        trans: TransGlobal | None = None
        if task is not None:
            try:
                trans = await asyncio.wait_for(asyncio.shield(task), limit)
            except TimeoutError:
                trans = None
        else:
            deadline = asyncio.get_running_loop().time() + limit
            while True:
                trans = await self.store.find(gid)
                if trans is None or trans.status in consts.FINISHED:
                    break
                if asyncio.get_running_loop().time() >= deadline:
                    break
                await asyncio.sleep(_POLL)
        status = trans.status if trans is not None else ""
        if status == consts.SUCCEED:
            return
        if status in (consts.FAILED, consts.ABORTING):
            assert trans is not None
            raise FailureError(trans.rollback_reason or f"transaction {status}")
        raise OngoingError("the transaction has not finished yet")

    async def _submit_workflow(self, req: TransRequest) -> None:
        gid = intake.check_gid(req.gid)
        extra = req.req_extra or {}
        status = extra.get("status", "")
        if status not in consts.FINISHED:
            raise intake.BadRequest("a workflow submit needs req_extra.status succeed or failed")
        progress = Progress(
            status=status,
            rollback_reason=extra.get("rollback_reason", "")[: intake.MAX_TEXT] or None,
            result=extra.get("result") or None,
        )
        if await self.store.save_progress(gid, progress, expect_status=consts.PREPARED):
            return
        existing = await self._existing(gid, consts.WORKFLOW)
        if existing.status != status:  # a repeated submit of the same outcome is fine
            raise FailureError(f"current status '{existing.status}', cannot submit {status}")

    async def abort(self, req: TransRequest) -> None:
        gid = intake.check_gid(req.gid)
        existing, branches = await self.store.load(gid)
        if existing is None:
            raise LookupError(f"no transaction with gid {gid}")
        if existing.trans_type == consts.MSG and existing.status == consts.PREPARED:
            if not await self.store.save_progress(
                gid, Progress(status=consts.FAILED), expect_status=consts.PREPARED
            ):
                raise OngoingError(f"transaction {gid} is changing concurrently, try again")
            return
        if existing.trans_type not in (consts.TCC, consts.XA) or existing.status not in (
            consts.PREPARED,
            consts.ABORTING,
        ):
            raise FailureError(
                f"trans type: '{existing.trans_type}' current status "
                f"'{existing.status}', cannot abort"
            )
        task = self.processor.active.get(gid)
        if existing.status == consts.PREPARED:
            owner = self.processor.new_owner()
            options = decode_options(existing.options)
            reason = (req.rollback_reason or "")[: intake.MAX_TEXT] or None
            progress = Progress(
                status=consts.ABORTING,
                rollback_reason=reason,
                owner=owner,
                next_cron_delay=self.schedule.lease(options),
            )
            if not await self.store.save_progress(gid, progress, expect_status=consts.PREPARED):
                raise OngoingError(f"transaction {gid} is changing concurrently, try again")
            existing.status, existing.owner = consts.ABORTING, owner
            if reason:
                existing.rollback_reason = reason
            task = self.processor.start(existing, branches, owner)
        if req.wait_result or decode_options(existing.options).wait_result:
            try:
                await self._wait(gid, task, 0)
            except FailureError:
                return  # an abort that ended failed did what it was asked

    async def force_stop(self, req: TransRequest) -> None:
        gid = intake.check_gid(req.gid)
        for _ in range(5):
            existing = await self.store.find(gid)
            if existing is None:
                raise LookupError(f"no transaction with gid {gid}")
            if existing.status in consts.FINISHED:
                raise FailureError(
                    f"global transaction force stop error. status: {existing.status}"
                )
            if await self.store.save_progress(
                gid, Progress(status=consts.FAILED), expect_status=existing.status
            ):
                return
        raise OngoingError(f"transaction {gid} is changing concurrently, try again")

    async def register_branch(self, data: dict[str, str], *, payload: bytes | None = None) -> None:
        gid, _trans_type, ops = intake.registered_branches(data, payload=payload)
        if not await self.store.add_branches(gid, ops, expect_status=consts.PREPARED):
            raise FailureError(f"no trans with gid: {gid} status: {consts.PREPARED} found")

    async def prepare_workflow(self, req: TransRequest) -> Query:
        req.trans_type = consts.WORKFLOW
        trans, _, options = await intake.new_transaction(self.store, req, consts.PREPARED)
        first = self.schedule.base_interval(options)
        trans.next_cron_interval = first
        if await self.store.create(trans, [], next_cron_delay=float(first)):
            return Query(trans, [])
        existing, branches = await self.store.load(trans.gid)
        if existing is None:
            raise StoreUnavailable(f"transaction {trans.gid} vanished")
        if existing.trans_type != consts.WORKFLOW:
            raise FailureError(f"gid {trans.gid} belongs to a {existing.trans_type} transaction")
        return Query(existing, branches)

    async def _existing(self, gid: str, trans_type: str) -> TransGlobal:
        existing = await self.store.find(gid)
        if existing is None:
            raise LookupError(f"no transaction with gid {gid}")
        if existing.trans_type != trans_type:
            raise FailureError(f"gid {gid} belongs to a {existing.trans_type} transaction")
        return existing

    # --- reading and operating --------------------------------------------------------

    async def query(self, gid: str) -> Query:
        if not gid:
            raise intake.BadRequest("no gid specified")
        trans, branches = await self.store.load(gid)
        return Query(trans, branches)

    async def all(self, *, gid: str, position: str, limit: int, where: ScanFilter) -> Page:
        if gid:
            trans = await self.store.find(gid)
            return Page([trans] if trans else [], "")
        return await self.store.scan(position=intake.position(position), limit=limit, where=where)

    async def reset_cron_time(self, *, after: float | None, limit: int) -> tuple[int, bool]:
        """Make due now what is scheduled later than `after` seconds (default three times
        TimeoutToFail): after an outage, retry at once instead of after long back-offs."""
        later = after if after is not None else 3.0 * self.timeout_to_fail
        intake.check_seconds(int(later), "timeout")
        return await self.store.reset_cron_time(after=later, limit=limit)

    async def reset_next_cron_time(self, req: TransRequest) -> None:
        gid = intake.check_gid(req.gid)
        if not await self.store.reset_next_cron_time(gid):
            raise LookupError(f"no unfinished transaction with gid {gid}")

    # --- topics and KV ----------------------------------------------------------------

    async def subscribe(self, topic: str, url: str, remark: str) -> None:
        _need(topic=topic, url=url)
        intake.check_url(url, "url")
        try:
            await topics.subscribe(self.store, topic, url, remark)
        except topics.TopicError as exc:
            raise FailureError(str(exc)) from None

    async def unsubscribe(self, topic: str, url: str) -> None:
        _need(topic=topic, url=url)
        try:
            await topics.unsubscribe(self.store, topic, url)
        except topics.TopicError as exc:
            raise FailureError(str(exc)) from None

    async def delete_topic(self, topic: str) -> None:
        _need(topic=topic)
        if not await self.store.delete_kv(topics.CATEGORY, topic):
            raise LookupError(f"no topic {topic!r}")

    async def scan_kv(self, cat: str, *, position: str, limit: int) -> tuple[list[KV], str]:
        return await self.store.scan_kv(cat, position=intake.position(position), limit=limit)

    async def query_kv(self, cat: str, key: str) -> list[KV]:
        return await self.store.find_kv(cat, key)


def _need(**values: str) -> None:
    for name, value in values.items():
        if not value:
            raise intake.BadRequest(f"empty {name}")


def millis_to_datetime(text: str, name: str) -> datetime | None:
    """`createTimeStart=1700000000000`: milliseconds since the epoch, as upstream."""
    ms = intake.millis(text, name)
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)
