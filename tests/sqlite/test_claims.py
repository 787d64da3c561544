"""Claiming against a real SQLite store (within each route's room, within a window of the
oldest due work, all of it when asked), and the claim loop's rule for handing work over."""

from __future__ import annotations

import asyncio

import pytest

from dispatcher.api.context import SERVICES
from dispatcher.claiming import ClaimLoop, Slot
from dispatcher.delivery.plan import finished
from dispatcher.ids import new_id, now
from dispatcher.store.records import JobStatus, NewJob
from dispatcher.store.sqlite import SQLiteStore
from tests.conftest import wait_for

A = "http://127.0.0.1:9001/hook"
B = "http://127.0.0.1:9002/hook"
ROUTE_A = ("acme", "127.0.0.1:9001")
ROUTE_B = ("acme", "127.0.0.1:9002")


@pytest.fixture
async def store(tmp_path):
    store = SQLiteStore(str(tmp_path / "claims.db"))
    await store.open()
    yield store
    await store.close()


async def deliveries_to(store: SQLiteStore, url: str, count: int) -> list[str]:
    """`count` pending webhook deliveries to `url`, due in the order made."""
    ids = []
    for _ in range(count):
        job = NewJob(new_id("job"), "acme", "echo", 1, url, None, None, None, None, now())
        await store.submit_job(job, 1000)
        [claimed] = await store.claim_jobs("w", 1, now(), lease=30)
        done = await store.finish_job(job.id, "w", finished(claimed, JobStatus.SUCCEEDED, now()))
        assert done is not None
        ids.append(done.deliveries[0].id)
    return ids


def hosts(claimed) -> list[str]:
    return [due.delivery.target for due in claimed]


async def test_a_claim_takes_no_more_of_a_route_than_its_room(store):
    await deliveries_to(store, A, 10)
    await deliveries_to(store, B, 5)
    claimed = await store.claim_deliveries(
        "me", 10, now(), 30, route_room={ROUTE_A: 2}, per_route=3
    )
    # Two of A (its room), three of B (the room of a route not named), oldest first.
    assert hosts(claimed) == [A, A, B, B, B]
    # The rest of A stays unclaimed, for whoever has room for it.
    again = await store.claim_deliveries("other", 20, now(), 30)
    assert hosts(again) == [A] * 8 + [B] * 2


async def test_a_full_route_is_passed_over_and_the_window_bounds_the_look(store):
    await deliveries_to(store, A, 12)
    later_b = await deliveries_to(store, B, 2)
    # A is at its share: a claim looking at the 10 oldest due sees only A, takes nothing.
    windowed = await store.claim_deliveries("me", 5, now(), 30, skip_routes=[ROUTE_A], window=10)
    assert windowed == []
    # Looking at everything (once a poll interval) reaches B behind A's backlog.
    everything = await store.claim_deliveries("me", 5, now(), 30, skip_routes=[ROUTE_A])
    assert [due.delivery.id for due in everything] == later_b


async def test_a_claimed_delivery_carries_its_job_event_body(store):
    [delivery_id] = await deliveries_to(store, A, 1)
    [due] = await store.claim_deliveries("me", 5, now(), 30)
    assert due.delivery.id == delivery_id
    assert b'"type":"job.succeeded"' in due.body
    assert due.deadline is None


async def test_a_job_submitted_to_a_free_worker_starts_in_the_write_that_made_it(make_api):
    # A poll interval of a minute: a job that needed a claim loop to wake would still start,
    # so the telling mark is started_at: handed over, it started as it was written.
    api = await make_api(workers=2, poll_interval=60)
    pool = api.client.server.app[SERVICES].pool
    await wait_for(lambda: not pool._waiting, timeout=5)  # its first claim found nothing
    accepted = await api.submit(type="sleep", payload={"seconds": 2, "result": 1})
    assert accepted["status"] == "queued" and accepted["started_at"] is None
    current = await api.job(accepted["id"])
    assert current["status"] == "running"
    assert current["started_at"] == accepted["created_at"]


async def test_with_every_worker_busy_a_job_waits_queued_then_is_claimed(make_api):
    api = await make_api(workers=1, poll_interval=60)
    first = await api.submit(type="sleep", payload={"seconds": 0.3, "result": 1})
    second = await api.submit(type="echo", payload={"n": 2})
    assert (await api.job(second["id"]))["status"] == "queued"
    done = await api.job(second["id"], wait=10)
    assert done["status"] == "succeeded"
    assert done["started_at"] > first["created_at"]


class ListLoop(ClaimLoop[str]):
    """The claim loop's own rules, over work kept in a list (tenant "t")."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity=capacity, per_destination=capacity, poll_interval=60)
        self.due: list[str] = []
        self.done: list[str] = []
        self.gate = asyncio.Event()

    async def _claim_due(self, limit, skip_tenants):
        taken, self.due = self.due[:limit], self.due[limit:]
        return taken

    def _key(self, item):
        return item

    def _tenant(self, item):
        return "t"

    async def _process(self, item, slot: Slot):
        await self.gate.wait()
        self.done.append(item)

    async def _release(self, keys):
        self.due = keys + self.due


async def test_new_work_is_not_handed_over_while_older_work_waits_in_the_store():
    loop = ListLoop(capacity=2)
    loop.start()
    try:
        await wait_for(lambda: not loop._waiting, timeout=5)  # nothing due at start
        assert loop.reserve("t")  # a free slot, nothing older: handed over
        loop.unreserve("t")
        loop.due = ["old-1", "old-2", "old-3"]
        loop.wake("t")
        # Older work waits: new work queues behind it, even where a slot is free.
        assert not loop.reserve("t")
        await wait_for(lambda: loop.busy == 2, timeout=5)
        loop.gate.set()
        await wait_for(lambda: loop.done == ["old-1", "old-2", "old-3"], timeout=5)
        await wait_for(lambda: not loop._waiting, timeout=5)
        assert loop.reserve("t")  # the store ran dry: handing over resumes
        loop.unreserve("t")
    finally:
        await loop.stop(grace=1)
