"""The SQLite store on a real file: group commit, idempotency, leases, purge, migrations."""

from __future__ import annotations

import asyncio

import pytest

from dispatcher.delivery.plan import finished
from dispatcher.errors import Conflict, QueueFull
from dispatcher.ids import now
from dispatcher.store.records import (
    Attempt,
    AttemptRecord,
    Channel,
    DeliveryFilter,
    DeliveryStatus,
    JobFilter,
    JobStatus,
    Trigger,
)
from dispatcher.store.sqlite import SQLiteStore
from dispatcher.store.sqlite.migrations import MIGRATIONS
from dispatcher.store.sqlite.writer import Batch
from tests.test_store_contract import new_job


@pytest.fixture
async def store(tmp_path):
    store = SQLiteStore(str(tmp_path / "store.db"))
    await store.open()
    yield store
    await store.close()


async def all_jobs(store: SQLiteStore) -> list:
    return (await store.list_jobs(JobFilter(tenant=None, limit=500))).items


async def test_concurrent_submissions_share_commits(store):
    writer = store._writer
    commits_before = writer.commits
    results = await asyncio.gather(*(store.submit_job(new_job(), 10_000) for _ in range(500)))
    assert all(created for _, created in results)
    assert len(await all_jobs(store)) == 500
    assert writer.commits - commits_before < 100, "500 submissions should share commits"


async def test_same_idempotency_key_in_one_batch_gives_one_job(store):
    results = await asyncio.gather(
        *(store.submit_job(new_job(key="k1", digest="hash-a"), 100) for _ in range(20))
    )
    ids = {job.id for job, _ in results}
    assert len(ids) == 1
    assert sum(created for _, created in results) == 1


async def test_same_idempotency_key_with_another_body_conflicts_in_one_batch(store):
    first, second = await asyncio.gather(
        store.submit_job(new_job(key="k2", digest="hash-a"), 100),
        store.submit_job(new_job(key="k2", digest="hash-b"), 100),
        return_exceptions=True,
    )
    assert first[1] is True
    assert isinstance(second, Conflict)


async def test_queue_limit_counts_jobs_in_the_same_batch(store):
    results = await asyncio.gather(
        *(store.submit_job(new_job(), 3) for _ in range(5)), return_exceptions=True
    )
    assert sum(isinstance(r, QueueFull) for r in results) == 2


async def test_expired_lease_is_claimed_by_another_owner(store):
    job, _ = await store.submit_job(new_job(), 10)
    start = now()
    [claimed] = await store.claim_jobs("a", 10, start, lease=0.5)
    assert claimed.id == job.id
    assert await store.claim_jobs("b", 10, start + 0.1, lease=0.5) == []
    [taken] = await store.claim_jobs("b", 10, start + 1, lease=0.5)
    assert taken.id == job.id


async def test_only_the_lease_holder_can_finish_a_job(store):
    job, _ = await store.submit_job(new_job(), 10)
    start = now()
    [claimed] = await store.claim_jobs("a", 10, start, lease=0.5)
    await store.claim_jobs("b", 10, start + 1, lease=30)
    outcome = finished(claimed, JobStatus.SUCCEEDED, now(), result=1)
    assert await store.finish_job(job.id, "a", outcome) is None
    done = await store.finish_job(job.id, "b", outcome)
    assert done is not None and done.status is JobStatus.SUCCEEDED
    assert len(done.deliveries) == 1


async def test_purge_removes_old_finished_jobs_with_deliveries(store):
    job, _ = await store.submit_job(new_job(), 10)
    [claimed] = await store.claim_jobs("a", 10, now(), lease=30)
    await store.finish_job(job.id, "a", finished(claimed, JobStatus.SUCCEEDED, now() - 100))
    [due] = await store.claim_deliveries("a", 10, now(), lease=30)
    attempt = Attempt(1, now(), 5, 200, None, "ok", Trigger.SCHEDULED, None)
    await store.record_attempt(
        AttemptRecord(due.delivery.id, attempt, DeliveryStatus.SUCCEEDED, None)
    )
    kept, _ = await store.submit_job(new_job(), 10)

    assert await store.purge(now() - 50) == 1

    assert await store.get_job(job.id, None) is None
    assert await store.get_job(kept.id, None) is not None
    page = await store.list_deliveries(DeliveryFilter(tenant=None, limit=500))
    assert page.items == []


async def test_purge_keeps_a_job_whose_delivery_is_pending(store):
    job, _ = await store.submit_job(new_job(), 10)
    [claimed] = await store.claim_jobs("a", 10, now(), lease=30)
    await store.finish_job(job.id, "a", finished(claimed, JobStatus.SUCCEEDED, now() - 100))
    assert await store.purge(now()) == 0


async def test_a_failing_operation_does_not_fail_its_batch(store):
    def broken(batch: Batch) -> None:
        batch.db.execute("INSERT INTO no_such_table VALUES (1)")

    results = await asyncio.gather(
        store.submit_job(new_job(), 10),
        store._writer.write(broken),
        store.submit_job(new_job(), 10),
        return_exceptions=True,
    )
    assert results[0][1] is True and results[2][1] is True
    assert isinstance(results[1], Exception)
    assert len(await all_jobs(store)) == 2


async def test_reopening_applies_no_migration_twice(tmp_path):
    path = str(tmp_path / "again.db")
    for _ in range(2):
        store = SQLiteStore(path)
        await store.open()
        await store.submit_job(new_job(), 10)
        await store.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert len(await all_jobs(store)) == 2
        rows = await store._read("SELECT version FROM schema_version ORDER BY version")
        assert [row[0] for row in rows] == list(range(1, len(MIGRATIONS) + 1))
    finally:
        await store.close()


async def test_delivery_follow_ups_are_written_with_the_attempt(store):
    job, _ = await store.submit_job(new_job(notify={"email": "o@example.com"}), 10)
    [claimed] = await store.claim_jobs("a", 10, now(), lease=30)
    outcome = finished(claimed, JobStatus.SUCCEEDED, now())
    assert [d.channel for d in outcome.deliveries] == [Channel.WEBHOOK, Channel.EMAIL]
    await store.finish_job(job.id, "a", outcome)
    due = await store.claim_deliveries("a", 10, now(), lease=30)
    assert {d.delivery.channel for d in due} == {Channel.WEBHOOK, Channel.EMAIL}
    assert all(d.notify == {"email": "o@example.com"} for d in due)
