"""The deliverer against a real store, with senders of our own Sender protocol standing in
for far ends that answer oddly, and a store that fails once where the real one might."""

from __future__ import annotations

import asyncio

import pytest

from dispatcher.delivery.deliverer import Deliverer
from dispatcher.delivery.destinations import CachingResolver, Destinations
from dispatcher.delivery.endpoints import EndpointBook
from dispatcher.delivery.plan import finished
from dispatcher.delivery.policy import AttemptResult, RetryPolicy
from dispatcher.ids import new_id, now
from dispatcher.store.feed import LocalFeed
from dispatcher.store.records import (
    Channel,
    DeliveryFilter,
    DueDelivery,
    JobStatus,
    NewJob,
)
from dispatcher.store.sqlite import SQLiteStore
from tests.conftest import wait_for


class Latin1Relay:
    """An SMTP relay answering in Latin-1, which arrives as lone surrogates."""

    async def send(self, due: DueDelivery) -> AttemptResult:
        reply = b"550 Empf\xe4nger unbekannt".decode("utf-8", "surrogateescape")
        return AttemptResult(ok=False, error=reply, response_body=reply, gone=True)


class Accepting:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, due: DueDelivery) -> AttemptResult:
        self.sent.append(due.delivery.id)
        await asyncio.sleep(0.05)  # an attempt takes a moment, so a host's share fills
        return AttemptResult(ok=True, status_code=200)


class ReleaseFailsOnce(SQLiteStore):
    failed = False

    async def release_deliveries(self, owner: str, delivery_ids: list[str]) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("database is locked")
        await super().release_deliveries(owner, delivery_ids)


async def finished_job(store: SQLiteStore, **fields) -> str:
    values = dict(callback_url=None, endpoint_id=None, notify=None, metadata=None, deadline=None)
    values.update(fields)
    job = NewJob(new_id("job"), "acme", "echo", 1, created_at=now(), **values)
    await store.submit_job(job, 100)
    [claimed] = await store.claim_jobs("w", 1, now(), lease=30)
    await store.finish_job(job.id, "w", finished(claimed, JobStatus.SUCCEEDED, now()))
    return job.id


def deliverer(store, senders, per_host: int = 32, lease: float = 30) -> Deliverer:
    return Deliverer(
        store, senders, RetryPolicy([0.05]), Destinations(CachingResolver(), 5), owner="me",
        concurrency=8, per_host=per_host, lease=lease, poll_interval=0.05,
        endpoints=EndpointBook(store, LocalFeed()), disable_after=432_000,
    )  # fmt: skip


@pytest.fixture
async def open_store(tmp_path):
    stores = []

    async def make(cls=SQLiteStore):
        store = cls(str(tmp_path / f"{len(stores)}.db"))
        await store.open()
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


async def all_deliveries(store):
    return (await store.list_deliveries(DeliveryFilter(tenant=None, limit=100))).items


async def test_far_end_text_that_is_not_utf8_is_recorded_once(open_store):
    store = await open_store()
    await finished_job(store, notify={"email": "owner@example.com"})
    loop = deliverer(store, {Channel.EMAIL: Latin1Relay()})
    loop.start()
    try:

        async def recorded():
            [delivery] = await all_deliveries(store)
            return delivery if delivery.status != "pending" else None

        delivery = await wait_for(recorded)
    finally:
        await loop.stop(1)
    assert delivery.status == "failed"
    assert delivery.attempt_count == 1
    assert delivery.last_error == "550 Empf\ufffdnger unbekannt"


async def test_a_failed_hand_back_never_leaves_a_host_skipped(open_store):
    store = await open_store(ReleaseFailsOnce)
    for _ in range(3):
        await finished_job(store, callback_url="http://127.0.0.1:9/hook")
    sender = Accepting()
    loop = deliverer(store, {Channel.WEBHOOK: sender}, per_host=1, lease=0.5)
    loop.start()
    try:

        async def all_sent():
            items = await all_deliveries(store)
            return all(d.status == "succeeded" for d in items)

        await wait_for(all_sent, timeout=15)
    finally:
        await loop.stop(1)
    assert store.failed
    assert len(set(sender.sent)) == 3
