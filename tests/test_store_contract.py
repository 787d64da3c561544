"""The store port's contract, held by both adapters: each test runs on a SQLite file and
on a fresh PostgreSQL database. The tests at the end are PostgreSQL's own: several
instances on one database (two stores, two pools), and a database that goes away."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from dispatcher.delivery.plan import finished
from dispatcher.errors import Conflict, NotFound, QueueFull, StartupError, StoreUnavailable
from dispatcher.ids import new_id, now
from dispatcher.store.endpoint_records import (
    EndpointChanges,
    EndpointHealth,
    NewEndpoint,
    Signature,
)
from dispatcher.store.postgres import PostgresStore
from dispatcher.store.postgres import queries as postgres_sql
from dispatcher.store.records import (
    ApiKey,
    Attempt,
    AttemptRecord,
    Channel,
    DeliveryFilter,
    DeliveryStatus,
    Job,
    JobFilter,
    JobStatus,
    Lease,
    NewDelivery,
    NewJob,
    Trigger,
)
from dispatcher.store.sqlite import SQLiteStore
from tests.conftest import wait_for
from tests.support.databases import database_url, fresh_postgres_url

A = "http://127.0.0.1:9001/hook"
B = "http://127.0.0.1:9002/hook"
ROUTE_A = ("acme", "127.0.0.1:9001")
ROUTE_B = ("acme", "127.0.0.1:9002")
FAR = 3600.0


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        opened: Any = SQLiteStore(str(tmp_path / "store.db"))
        await opened.open()
        yield opened
        await opened.close()
        return
    async with fresh_postgres_url() as url:
        opened = PostgresStore(url, pool_size=4)
        await opened.open()
        try:
            yield opened
        finally:
            await opened.close()


def only_postgres(store: Any) -> None:
    if not isinstance(store, PostgresStore):
        pytest.skip("PostgreSQL only")


def new_job(tenant: str = "acme", key: str | None = None, digest: str | None = None, **fields):
    values: dict[str, Any] = {
        "id": new_id("job"),
        "tenant": tenant,
        "type": "echo",
        "payload": {"n": 1},
        "callback_url": A,
        "endpoint_id": None,
        "notify": None,
        "metadata": None,
        "deadline": None,
        "created_at": now(),
        "idempotency_key": key,
        "request_hash": digest,
    }
    values.update(fields)
    return NewJob(**values)


async def ended(store: Any, at: float | None = None, **fields: Any) -> Job:
    """A job run and succeeded (at `at`), with its deliveries written, due at `at`."""
    job, _ = await store.submit_job(new_job(**fields), 10_000, lease=Lease("w", FAR))
    outcome = finished(job, JobStatus.SUCCEEDED, at if at is not None else now(), result=1)
    done = await store.finish_job(job.id, "w", outcome)
    assert done is not None
    return done


async def deliveries_to(store: Any, url: str, count: int, **fields: Any) -> list[str]:
    ids = []
    for _ in range(count):
        done = await ended(store, callback_url=url, **fields)
        ids.append(done.deliveries[0].id)
    return ids


def endpoint(tenant: str = "acme", url: str = A, **fields: Any) -> NewEndpoint:
    values: dict[str, Any] = {
        "id": new_id("ep"),
        "tenant": tenant,
        "url": url,
        "host": url.split("/")[2],
        "description": "d",
        "headers": {"x-a": "1"},
        "event_types": None,
        "signature": Signature.HMAC,
        "secret": "whsec_first",
        "rate_limit": None,
        "max_in_flight": None,
        "created_at": now(),
    }
    values.update(fields)
    return NewEndpoint(**values)


def attempt(delivery_id: str, status=DeliveryStatus.SUCCEEDED, code: int | None = 200, **more):
    tried = Attempt(0, now(), 7, code, None if code else "refused", "ok", Trigger.SCHEDULED, None)
    return AttemptRecord(delivery_id, tried, status, more.pop("next_attempt_at", None), **more)


def ids(claimed: list[Any]) -> list[str]:
    return [due.delivery.id for due in claimed]


# Tenants and keys


async def test_keys_are_found_listed_newest_first_touched_and_revoked(store):
    at = now()
    made = [ApiKey(f"dk_{p}", "h", "acme", p == "B", at, None) for p in ("a", "B", "c")]
    made.append(ApiKey("dk_old", "h", "beta", False, at - 10, None))
    for key in made:
        secrets = await store.create_key(key, f"whsec_{key.tenant}")
    assert secrets.current == "whsec_beta"
    # A second key of a tenant keeps the tenant's secret.
    assert (await store.tenant_secrets("acme")).current == "whsec_acme"
    assert await store.find_key("dk_B") == made[1]
    assert await store.find_key("dk_none") is None
    expected = sorted(made, key=lambda k: (k.created_at, k.prefix), reverse=True)
    seen, cursor = [], None
    while True:
        page = await store.list_keys(2, cursor)
        seen += page.items
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert [k.prefix for k in seen] == [k.prefix for k in expected]
    await store.touch_key("dk_a", at + 5)
    assert (await store.find_key("dk_a")).last_used_at == at + 5
    assert await store.count_keys() == 4
    assert await store.revoke_key("dk_a") is True
    assert await store.revoke_key("dk_a") is False
    assert await store.count_keys() == 3


async def test_tenant_secrets_rotate_and_the_old_one_signs_through_its_grace(store):
    at = now()
    await store.ensure_tenant("acme", "whsec_one", at)
    await store.ensure_tenant("acme", "whsec_other", at)
    assert (await store.tenant_secrets("acme")).current == "whsec_one"
    rotated = await store.rotate_tenant_secret("acme", "whsec_two", at + 60, at)
    assert rotated.current == "whsec_two"
    assert rotated.previous == (("whsec_one", at + 60),)
    assert await store.tenant_secrets("acme") == rotated
    assert (await store.tenant_secrets("acme")).active(at + 61) == ["whsec_two"]
    assert await store.tenant_secrets("nobody") is None
    with pytest.raises(NotFound):
        await store.rotate_tenant_secret("nobody", "whsec_x", at, at)


# Jobs


async def test_a_submitted_job_is_queued_and_read_back_by_its_tenant(store):
    job, created = await store.submit_job(new_job(metadata={"m": [1]}), 10)
    assert created and job.status is JobStatus.QUEUED and job.started_at is None
    assert await store.get_job(job.id, "acme") == job
    assert await store.get_job(job.id, None) == job
    assert await store.get_job(job.id, "other") is None


async def test_a_job_submitted_with_a_lease_is_running_and_not_claimed(store):
    job, _ = await store.submit_job(new_job(), 10, lease=Lease("me", FAR))
    assert job.status is JobStatus.RUNNING and job.started_at == job.created_at
    assert await store.claim_jobs("other", 10, now(), 30) == []


async def test_an_idempotency_key_gives_the_first_job_or_a_conflict(store):
    first, created = await store.submit_job(new_job(key="k", digest="h1"), 2)
    again, created_again = await store.submit_job(new_job(key="k", digest="h1"), 2)
    assert created and not created_again and again.id == first.id
    with pytest.raises(Conflict, match="already used with a different request"):
        await store.submit_job(new_job(key="k", digest="h2"), 2)
    # Another tenant's key is its own.
    _, created = await store.submit_job(new_job(tenant="beta", key="k", digest="h2"), 2)
    assert created
    # A repeat is answered even with the queue full.
    assert (await store.submit_job(new_job(key="k", digest="h1"), 2))[0].id == first.id
    assert len((await store.list_jobs(JobFilter(tenant=None))).items) == 2


async def test_the_queue_is_full_past_its_limit_and_past_a_tenant_share(store):
    await store.submit_job(new_job(), 3, tenant_share=2)
    await store.submit_job(new_job(), 3, tenant_share=2)
    with pytest.raises(QueueFull, match="this tenant has 2 jobs queued; its share is 2"):
        await store.submit_job(new_job(), 3, tenant_share=2)
    await store.submit_job(new_job(tenant="beta"), 3, tenant_share=2)
    with pytest.raises(QueueFull, match="3 jobs are queued; the limit is 3"):
        await store.submit_job(new_job(tenant="gamma"), 3)
    assert len((await store.list_jobs(JobFilter(tenant=None))).items) == 3


async def test_jobs_are_listed_newest_first_by_filter_with_their_deliveries(store):
    done = await ended(store)
    queued = [(await store.submit_job(new_job(type=t), 100))[0] for t in ("a", "b", "a")]
    await store.submit_job(new_job(tenant="beta"), 100)
    page = await store.list_jobs(JobFilter(tenant="acme", limit=2))
    assert [j.id for j in page.items] == [queued[2].id, queued[1].id]
    rest = await store.list_jobs(JobFilter(tenant="acme", limit=2, before=page.next_cursor))
    assert [j.id for j in rest.items] == [queued[0].id, done.id] and rest.next_cursor is None
    assert rest.items[1].deliveries == done.deliveries
    typed = await store.list_jobs(JobFilter(tenant="acme", type="a", status=JobStatus.QUEUED))
    assert [j.id for j in typed.items] == [queued[2].id, queued[0].id]
    succeeded = await store.list_jobs(JobFilter(tenant=None, status=JobStatus.SUCCEEDED))
    assert [j.id for j in succeeded.items] == [done.id]


async def test_claims_take_the_oldest_due_first_passing_over_skipped_tenants(store):
    at = now()
    jobs = {}
    for name, tenant, offset in [("c", "acme", -1), ("a", "acme", -3), ("b", "beta", -2)]:
        jobs[name] = (await store.submit_job(new_job(tenant, created_at=at + offset), 100))[0]
    await store.submit_job(new_job(created_at=at + FAR), 100)  # not due yet
    taken = await store.claim_jobs("me", 2, now(), 30, skip_tenants=["beta"])
    assert {j.id for j in taken} == {jobs["a"].id, jobs["c"].id}
    assert all(j.status is JobStatus.RUNNING and j.started_at is not None for j in taken)
    [rest] = await store.claim_jobs("me", 10, now(), 30)
    assert rest.id == jobs["b"].id


async def test_a_lapsed_lease_is_taken_again_and_counted(store):
    job, _ = await store.submit_job(new_job(), 10)
    [first] = await store.claim_jobs("a", 10, now(), lease=0.05)
    assert first.lapses == 0
    [again] = await wait_for(lambda: store.claim_jobs("b", 10, now(), lease=30), timeout=10)
    assert again.id == job.id and again.lapses == 1
    outcome = finished(first, JobStatus.SUCCEEDED, now())
    assert await store.finish_job(job.id, "a", outcome) is None
    assert (await store.finish_job(job.id, "b", outcome)).status is JobStatus.SUCCEEDED


async def test_renewed_leases_hold_and_only_the_owner_renews(store):
    kept, _ = await store.submit_job(new_job(created_at=now() - 2), 10)
    lost, _ = await store.submit_job(new_job(created_at=now() - 1), 10)
    start = now()
    await store.claim_jobs("a", 10, start, lease=0.3)
    await store.renew_leases("a", [kept.id], [], FAR)
    await store.renew_leases("intruder", [lost.id], [], FAR)
    await store.renew_leases("a", [], [], FAR)  # nothing to renew
    await wait_for(lambda: now() > start + 0.5)
    assert [j.id for j in await store.claim_jobs("b", 10, now(), 30)] == [lost.id]


async def test_only_the_lease_holder_finishes_and_then_deliveries_are_written(store):
    job, _ = await store.submit_job(new_job(notify={"email": "o@example.com"}), 10)
    [claimed] = await store.claim_jobs("a", 10, now(), 30)
    outcome = finished(claimed, JobStatus.SUCCEEDED, now(), result={"r": 1})
    assert await store.finish_job(job.id, "b", outcome) is None
    assert await store.finish_job(job.id, None, outcome) is None
    assert (await store.get_job(job.id, None)).status is JobStatus.RUNNING
    assert (await store.list_deliveries(DeliveryFilter(tenant=None))).items == []
    done = await store.finish_job(job.id, "a", outcome)
    assert done.status is JobStatus.SUCCEEDED and done.result == {"r": 1}
    assert [d.channel for d in done.deliveries] == ["webhook", "email"]
    assert await store.get_job(job.id, None) == done
    assert await store.finish_job(job.id, "a", outcome) is None


async def test_a_queued_job_is_finished_without_an_owner(store):
    job, _ = await store.submit_job(new_job(callback_url=None), 10)
    outcome = finished(job, JobStatus.CANCELLED, now())
    done = await store.finish_job(job.id, None, outcome)
    assert done.status is JobStatus.CANCELLED and done.deliveries == ()
    assert await store.claim_jobs("a", 10, now(), 30) == []


async def test_a_delivery_to_an_endpoint_goes_where_the_endpoint_points(store):
    ep = await store.create_endpoint(endpoint(url=B), 1000)
    done = await ended(store, callback_url=None, endpoint_id=ep.id)
    [delivery] = done.deliveries
    found = await store.get_delivery(delivery.id, "acme")
    assert found.target == B and found.endpoint_id == ep.id
    [due] = await store.claim_deliveries("me", 10, now(), 30, per_route=5)
    assert due.delivery.target == B


async def test_deliveries_written_leased_are_handed_over_until_released(store):
    job, _ = await store.submit_job(new_job(), 10, lease=Lease("w", FAR))
    outcome = finished(job, JobStatus.SUCCEEDED, now())
    [new] = outcome.deliveries
    await store.finish_job(job.id, "w", outcome, Lease("w", FAR), frozenset({new.id}))
    assert await store.claim_deliveries("other", 10, now(), 30) == []
    await store.release_deliveries("other", [new.id])  # not its lease: nothing changes
    assert await store.claim_deliveries("other", 10, now(), 30) == []
    await store.release_deliveries("w", [new.id])
    assert ids(await store.claim_deliveries("other", 10, now(), 30)) == [new.id]


async def test_requeued_and_released_jobs_go_back_to_the_queue(store):
    first, _ = await store.submit_job(new_job(created_at=now() - 5), 10)
    second, _ = await store.submit_job(new_job(), 10)
    await store.claim_jobs("a", 10, now(), 30)
    await store.requeue_job(first.id, "intruder", now())
    await store.release_jobs("intruder", [second.id])
    assert await store.claim_jobs("b", 10, now(), 30) == []
    await store.requeue_job(first.id, "a", now() + FAR)
    await store.release_jobs("a", [second.id])
    await store.release_jobs("a", [])
    requeued = await store.get_job(first.id, None)
    assert requeued.status is JobStatus.QUEUED and requeued.retries == 1
    # Released work keeps its place; requeued work waits for its run_at.
    assert [j.id for j in await store.claim_jobs("b", 10, now(), 30)] == [second.id]


async def test_queued_jobs_past_their_deadline_are_found(store):
    late, _ = await store.submit_job(new_job(deadline=now() - 1), 10)
    await store.submit_job(new_job(deadline=now() + FAR), 10)
    await store.submit_job(new_job(deadline=now() - 1), 10, lease=Lease("a", FAR))
    assert [j.id for j in await store.expired_deadlines(now(), 10)] == [late.id]


# Deliveries


async def test_a_claim_takes_no_more_of_a_route_than_its_room(store):
    await deliveries_to(store, A, 10)
    await deliveries_to(store, B, 5)
    claimed = await store.claim_deliveries(
        "me", 10, now(), 30, route_room={ROUTE_A: 2}, per_route=3
    )
    assert [due.delivery.target for due in claimed] == [A, A, B, B, B]
    again = await store.claim_deliveries("other", 20, now(), 30)
    assert [due.delivery.target for due in again] == [A] * 8 + [B] * 2


async def test_a_full_route_is_passed_over_and_the_window_bounds_the_look(store):
    await deliveries_to(store, A, 12)
    later_b = await deliveries_to(store, B, 2)
    windowed = await store.claim_deliveries("me", 5, now(), 30, skip_routes=[ROUTE_A], window=10)
    assert windowed == []
    everything = await store.claim_deliveries("me", 5, now(), 30, skip_routes=[ROUTE_A])
    assert ids(everything) == later_b


async def test_a_claim_passes_over_skipped_tenants_and_endpoints_and_keeps_endpoint_room(store):
    ep = await store.create_endpoint(endpoint(url=A), 1000)
    to_ep = [(await ended(store, callback_url=None, endpoint_id=ep.id)).deliveries[0].id]
    to_ep.append((await ended(store, callback_url=None, endpoint_id=ep.id)).deliveries[0].id)
    [beta] = await deliveries_to(store, B, 1, tenant="beta")
    [plain] = await deliveries_to(store, B, 1)
    skipped = await store.claim_deliveries(
        "me", 10, now(), 30, skip_tenants=["beta"], skip_endpoints=[ep.id]
    )
    assert ids(skipped) == [plain]
    roomy = await store.claim_deliveries("me", 10, now(), 30, endpoint_room={ep.id: 1})
    assert ids(roomy) == [to_ep[0], beta]
    assert ids(await store.claim_deliveries("me", 10, now(), 30)) == [to_ep[1]]


async def test_a_claimed_delivery_carries_what_sending_needs_and_its_lease_holds(store):
    job = await ended(store, at=now() - 1, deadline=now() + FAR, notify={"email": "o@e.com"})
    claimed = await store.claim_deliveries("me", 10, now(), lease=0.05)
    assert {due.delivery.channel for due in claimed} == {Channel.WEBHOOK, Channel.EMAIL}
    [due] = [due for due in claimed if due.delivery.channel is Channel.WEBHOOK]
    assert due.delivery.job_id == job.id and due.delivery.lapses == 0
    assert b'"type":"job.succeeded"' in due.body
    assert due.deadline == job.deadline and due.notify == {"email": "o@e.com"}
    again = await wait_for(lambda: store.claim_deliveries("other", 10, now(), 30), timeout=10)
    assert set(ids(again)) == set(ids(claimed)) and all(d.delivery.lapses == 1 for d in again)
    assert await store.claim_deliveries("third", 10, now(), 30) == []


async def test_attempts_are_numbered_and_leave_the_delivery_with_its_follow_ups(store):
    [delivery_id] = await deliveries_to(store, A, 1)
    await store.claim_deliveries("me", 10, now(), 30)
    retry_at = now() - 0.5
    await store.record_attempt(
        attempt(delivery_id, DeliveryStatus.PENDING, 503, next_attempt_at=retry_at)
    )
    notice = NewDelivery(new_id("msg"), Channel.EMAIL, "o@e.com", None, "job.x", b"{}")
    [due] = await store.claim_deliveries("me", 10, now(), 30)  # its lease was let go
    assert due.delivery.attempt_count == 1 and due.delivery.next_attempt_at == retry_at
    await store.record_attempt(attempt(delivery_id, DeliveryStatus.FAILED, None,
                                       follow_ups=(notice,)))  # fmt: skip
    found = await store.get_delivery(delivery_id, "acme")
    assert found.status is DeliveryStatus.FAILED and found.attempt_count == 2
    assert found.last_error == "refused" and found.next_attempt_at is None
    assert [(a.number, a.status_code) for a in found.attempts] == [(1, 503), (2, None)]
    assert found.attempts[0].trigger is Trigger.SCHEDULED and found.attempts[0].by is None
    [follow_up] = await store.claim_deliveries("me", 10, now(), 30)
    assert follow_up.delivery.id == notice.id and follow_up.body == b"{}"
    assert follow_up.delivery.job_id == found.job_id and follow_up.delivery.tenant == "acme"


async def test_a_late_record_is_counted_but_leaves_the_delivery_to_its_new_holder(store):
    [delivery_id] = await deliveries_to(store, A, 1)
    await store.claim_deliveries("slow", 10, now(), 0.01)
    # Its lease lapsed mid-attempt; another instance took it and is sending it now.
    [taken] = await wait_for(lambda: store.claim_deliveries("quick", 10, now(), FAR))
    assert taken.delivery.id == delivery_id
    await store.record_attempt(attempt(delivery_id, owner="slow"))
    found = await store.get_delivery(delivery_id, None)
    assert found.status is DeliveryStatus.PENDING and found.attempt_count == 1
    assert [a.number for a in found.attempts] == [1]
    assert await store.claim_deliveries("third", 10, now(), FAR) == []  # still quick's
    retry_at = now() + FAR
    await store.record_attempt(
        attempt(delivery_id, DeliveryStatus.PENDING, 503, next_attempt_at=retry_at, owner="quick")
    )
    # Nobody holds it now; slow's attempt comes in later still (made as attempt 1).
    late = Attempt(1, now(), 7, 200, None, "ok", Trigger.SCHEDULED, None)
    record = AttemptRecord(delivery_id, late, DeliveryStatus.SUCCEEDED, None, owner="slow")
    await store.record_attempt(record)
    found = await store.get_delivery(delivery_id, None)
    assert found.status is DeliveryStatus.PENDING and found.next_attempt_at == retry_at
    assert found.last_status_code == 503 and found.attempt_count == 3
    assert [a.number for a in found.attempts] == [1, 2, 3]


async def test_an_attempt_teaches_the_endpoint_and_a_disabling_ends_what_waits(store):
    ep = await store.create_endpoint(endpoint(), 1000)
    first, second, third = [
        (await ended(store, callback_url=None, endpoint_id=ep.id)).deliveries[0].id
        for _ in range(3)
    ]
    await store.claim_deliveries("me", 2, now(), 30)  # the first two are in flight
    failing = EndpointHealth(failing_since=now() - 5, circuit_since=now(), probe_at=now() + 9)
    await store.record_attempt(
        attempt(first, DeliveryStatus.FAILED, 500, endpoint_id=ep.id, health=failing)
    )
    assert (await store.get_endpoint(ep.id, None)).health == failing
    gone = EndpointHealth(failing_since=now() - 5, disabled_reason="gone", disabled_at=now())
    await store.record_attempt(
        attempt(second, DeliveryStatus.FAILED, 410, endpoint_id=ep.id, health=gone)
    )
    disabled = await store.get_endpoint(ep.id, None)
    assert disabled.disabled and disabled.health.disabled_reason == "gone"
    waiting = await store.get_delivery(third, None)
    assert waiting.status is DeliveryStatus.FAILED
    assert waiting.last_error == f"the endpoint {ep.id} is disabled: gone"


async def test_deliveries_are_listed_newest_first_by_filter(store):
    ep = await store.create_endpoint(endpoint(url=B), 1000)
    before = now()
    a = await deliveries_to(store, A, 2)
    e = (await ended(store, callback_url=None, endpoint_id=ep.id)).deliveries[0].id
    mail = await ended(store, callback_url=None, notify={"email": "o@e.com"}, tenant="beta")
    every = await store.list_deliveries(DeliveryFilter(tenant=None, limit=3))
    assert ids_of(every.items) == [mail.deliveries[0].id, e, a[1]]
    rest = await store.list_deliveries(DeliveryFilter(tenant=None, before=every.next_cursor))
    assert ids_of(rest.items) == [a[0]] and rest.next_cursor is None
    assert ids_of((await store.list_deliveries(DeliveryFilter("acme"))).items) == [e, a[1], a[0]]
    by_ep = await store.list_deliveries(DeliveryFilter(None, endpoint_id=ep.id))
    assert ids_of(by_ep.items) == [e]
    by_channel = await store.list_deliveries(DeliveryFilter(None, channel=Channel.EMAIL))
    assert ids_of(by_channel.items) == [mail.deliveries[0].id]
    job_id = (await store.get_delivery(a[0], None)).job_id
    assert ids_of((await store.list_deliveries(DeliveryFilter(None, job_id=job_id))).items) == [
        a[0]
    ]
    assert (await store.list_deliveries(DeliveryFilter(None, until=before))).items == []
    since = await store.list_deliveries(DeliveryFilter(None, since=before, limit=500))
    assert len(since.items) == 4
    await store.record_attempt(attempt(a[0], DeliveryStatus.FAILED, 500))
    failed = await store.list_deliveries(DeliveryFilter(None, status=DeliveryStatus.FAILED))
    assert ids_of(failed.items) == [a[0]]
    assert await store.get_delivery(a[0], "beta") is None


def ids_of(items: list[Any]) -> list[str]:
    return [item.id for item in items]


async def test_a_replay_sends_a_finished_delivery_again_or_a_pending_one_now(store):
    [done_id, pending_id] = await deliveries_to(store, A, 2)
    await store.record_attempt(attempt(done_id))
    at = now()
    replayed = await store.replay_delivery(done_id, "acme", "dk_someone", at)
    assert replayed.status is DeliveryStatus.PENDING and replayed.next_attempt_at == at
    assert replayed.trigger is Trigger.MANUAL and replayed.triggered_by == "dk_someone"
    assert replayed.schedule_start == 1 and replayed.attempt_count == 1
    tried_now = await store.replay_delivery(pending_id, None, "dk_someone", at)
    assert tried_now.schedule_start == 0 and tried_now.next_attempt_at == at
    with pytest.raises(NotFound):
        await store.replay_delivery(done_id, "beta", "dk_someone", at)
    with pytest.raises(NotFound):
        await store.replay_delivery("msg_none", None, "dk_someone", at)


async def test_a_bulk_replay_takes_what_its_dry_run_counted(store):
    ep = await store.create_endpoint(endpoint(url=B), 1000)
    off = await store.create_endpoint(endpoint(url=B), 1000)
    to_a = await deliveries_to(store, A, 3)
    to_ep = (await ended(store, callback_url=None, endpoint_id=ep.id)).deliveries[0].id
    to_off = (await ended(store, callback_url=None, endpoint_id=off.id)).deliveries[0].id
    for delivery_id in [*to_a[:2], to_ep, to_off]:
        await store.record_attempt(attempt(delivery_id, DeliveryStatus.FAILED, 500))
    await store.record_attempt(attempt(to_a[2]))
    await store.update_endpoint(off.id, None, EndpointChanges({}, disable_reason="off"), now())
    where = DeliveryFilter(tenant="acme", status=DeliveryStatus.FAILED)
    counted = await store.replay_deliveries(where, "dk_admin", now(), dry_run=True)
    assert counted == 3
    assert await store.replay_deliveries(where, "dk_admin", now(), dry_run=False) == 3
    assert await store.replay_deliveries(where, "dk_admin", now(), dry_run=True) == 0
    pending = await store.list_deliveries(DeliveryFilter("acme", status=DeliveryStatus.PENDING))
    assert sorted(ids_of(pending.items)) == sorted([*to_a[:2], to_ep])
    assert all(d.trigger is Trigger.MANUAL for d in pending.items)


# Endpoints


async def test_endpoints_are_created_read_listed_changed_and_deleted(store):
    made = [await store.create_endpoint(endpoint(rate_limit=5), 1000) for _ in range(3)]
    await store.create_endpoint(endpoint(tenant="beta"), 1000)
    ep = made[0]
    assert ep.rate_limit == 5 and ep.headers == {"x-a": "1"} and ep.secrets.current == "whsec_first"
    assert await store.get_endpoint(ep.id, "acme") == ep
    assert await store.get_endpoint(ep.id, "beta") is None
    page = await store.list_endpoints("acme", 2, None)
    assert ids_of(page.items) == [made[2].id, made[1].id]
    rest = await store.list_endpoints("acme", 2, page.next_cursor)
    assert ids_of(rest.items) == [ep.id] and rest.next_cursor is None
    assert len((await store.list_endpoints(None, 10, None)).items) == 4
    [waiting] = [(await ended(store, callback_url=None, endpoint_id=ep.id)).deliveries[0].id]
    changes = EndpointChanges({"url": B, "event_types": ["job.failed"], "rate_limit": None},
                              host="127.0.0.1:9002")  # fmt: skip
    changed = await store.update_endpoint(ep.id, "acme", changes, now())
    assert changed.url == B and changed.event_types == ("job.failed",)
    assert changed.rate_limit is None
    assert (await store.get_delivery(waiting, None)).target == B
    assert await store.update_endpoint(ep.id, "beta", changes, now()) is None
    disabled = await store.update_endpoint(ep.id, None, EndpointChanges({}, disable_reason="x"), 1)
    assert disabled.disabled and (await store.get_delivery(waiting, None)).status == "failed"
    enabled = await store.update_endpoint(ep.id, None, EndpointChanges({}, enable=True), now())
    assert not enabled.disabled
    assert await store.delete_endpoint(ep.id, "beta", now()) is False
    assert await store.delete_endpoint(ep.id, "acme", now()) is True
    assert await store.get_endpoint(ep.id, None) is None
    assert (await store.get_endpoint(ep.id, None, deleted=True)).deleted_at is not None
    assert await store.delete_endpoint(ep.id, None, now()) is False
    assert await store.update_endpoint(ep.id, None, changes, now()) is None


async def test_deleting_an_endpoint_fails_what_waits_but_not_what_is_in_flight(store):
    ep = await store.create_endpoint(endpoint(), 1000)
    flying, waiting = [
        (await ended(store, callback_url=None, endpoint_id=ep.id)).deliveries[0].id
        for _ in range(2)
    ]
    await store.claim_deliveries("me", 1, now(), 30)
    assert await store.delete_endpoint(ep.id, None, now())
    assert (await store.get_delivery(flying, None)).status is DeliveryStatus.PENDING
    gone = await store.get_delivery(waiting, None)
    assert gone.status is DeliveryStatus.FAILED and "was deleted" in gone.last_error


async def test_an_endpoint_secret_rotates_with_grace(store):
    ep = await store.create_endpoint(endpoint(), 1000)
    at = now()
    rotated = await store.rotate_endpoint_secret(ep.id, "acme", "whsec_second", at + 60, at)
    assert rotated.secrets.current == "whsec_second"
    assert rotated.secrets.active(at) == ["whsec_second", "whsec_first"]
    assert await store.rotate_endpoint_secret(ep.id, "beta", "whsec_x", at, at) is None


# Upkeep


async def test_stats_count_jobs_deliveries_and_endpoints(store):
    at = now()
    await store.submit_job(new_job(created_at=at - 3), 10)
    await store.submit_job(new_job(type="other", created_at=at - 1), 10)
    await store.submit_job(new_job(), 10, lease=Lease("a", FAR))
    [delivery_id, _] = await deliveries_to(store, A, 2)
    await store.record_attempt(attempt(delivery_id, DeliveryStatus.FAILED, 500))
    ep = await store.create_endpoint(endpoint(), 1000)
    await store.update_endpoint(ep.id, None, EndpointChanges({}, disable_reason="x"), at)
    stats = await store.stats(at)
    assert stats.jobs == {("echo", "queued"): 1, ("other", "queued"): 1, ("echo", "running"): 1}
    assert stats.oldest_queued_at == at - 3
    assert stats.deliveries == {"pending": 1, "failed": 1}
    assert (stats.endpoints_disabled, stats.circuits_open) == (1, 0)


async def test_purge_deletes_old_finished_jobs_but_keeps_those_still_sending(store):
    old = await ended(store, at=now() - 100)
    for d in old.deliveries:
        await store.record_attempt(attempt(d.id))
    sending = await ended(store, at=now() - 100)
    kept, _ = await store.submit_job(new_job(), 10)
    assert await store.purge(now() - 50) == 1
    assert await store.purge(now() - 50) == 0
    assert await store.get_job(old.id, None) is None
    assert await store.get_delivery(old.deliveries[0].id, None) is None
    assert await store.get_job(sending.id, None) is not None
    assert await store.get_job(kept.id, None) is not None


async def test_a_purge_passes_over_a_job_whose_delivery_is_being_replayed(store):
    only_postgres(store)
    old = await ended(store, at=now() - 100)
    [delivery_id] = [d.id for d in old.deliveries]
    await store.record_attempt(attempt(delivery_id, DeliveryStatus.FAILED, 500))
    async with store.pool.acquire() as replaying, replaying.transaction():
        # A replay on its way (another instance's), not committed yet...
        await replaying.fetch(postgres_sql.REPLAY_ONE, now(), "admin", delivery_id, None)
        # ...while the purge runs: it must pass over the job, not wait to delete it.
        purge = asyncio.ensure_future(store.purge(now() - 50))
        await wait_for(purge.done, timeout=5)
        assert purge.result() == 0
    found = await store.get_delivery(delivery_id, None)
    assert found is not None and found.status is DeliveryStatus.PENDING
    assert await store.purge(now() - 50) == 0  # pending now: kept until it ends


async def test_the_store_answers_is_writable_and_counts_commits(store):
    commits: list[int] = []
    store.observe_commits(commits.append)
    await store.ping()
    await store.check_writable()
    await store.submit_job(new_job(), 10)
    assert sum(commits) >= 1


# PostgreSQL: several instances on one database


@pytest.fixture
async def two(store: Any) -> AsyncIterator[tuple[Any, Any]]:
    """The test's store and a second instance on its database (a pool of its own)."""
    only_postgres(store)
    other = PostgresStore(store._dsn, pool_size=4)
    await other.open()
    try:
        yield store, other
    finally:
        await other.close()


async def claim_all(claim: Any, taken: list[str]) -> None:
    """Claim until a claim finds nothing, letting the other instance in between."""
    while batch := await claim():
        taken += batch
        await asyncio.sleep(0)


async def test_two_instances_never_claim_the_same_job(two):
    first, second = two
    jobs = [new_job(created_at=now() - i / 1000) for i in range(200)]
    for job in jobs:
        await first.submit_job(job, 10_000)
    a: list[str] = []
    b: list[str] = []

    def claim(store: Any, owner: str) -> Any:
        async def once() -> list[str]:
            return [j.id for j in await store.claim_jobs(owner, 7, now(), 30)]

        return once

    await asyncio.gather(claim_all(claim(first, "one"), a), claim_all(claim(second, "two"), b))
    assert not set(a) & set(b)
    assert sorted(a + b) == sorted(j.id for j in jobs)
    assert a and b


async def test_two_instances_never_claim_the_same_delivery(two):
    first, second = two
    for i in range(50):
        await ended(first, callback_url=A if i % 2 else B, notify={"email": "o@e.com"})
    made = ids_of((await first.list_deliveries(DeliveryFilter(None, limit=500))).items)
    a: list[str] = []
    b: list[str] = []

    def claim(store: Any, owner: str) -> Any:
        async def once() -> list[str]:
            return ids(await store.claim_deliveries(owner, 7, now(), 30))

        return once

    await asyncio.gather(claim_all(claim(first, "one"), a), claim_all(claim(second, "two"), b))
    assert not set(a) & set(b)
    assert sorted(a + b) == sorted(made) and len(made) == 100


async def test_a_lease_lapses_by_the_database_clock_not_the_callers(two):
    first, second = two
    held, _ = await first.submit_job(new_job(), 10)
    assert [j.id for j in await first.claim_jobs("one", 10, now(), lease=30)] == [held.id]
    [held_delivery] = await deliveries_to(first, A, 1)
    assert ids(await first.claim_deliveries("one", 10, now(), lease=30)) == [held_delivery]
    # An instance whose clock runs an hour ahead takes nothing whose lease holds...
    assert await second.claim_jobs("two", 10, now() + FAR, 30) == []
    assert await second.claim_deliveries("two", 10, now() + FAR, 30) == []
    # ...and another takes lapsed work once the database's clock says it lapsed.
    job, _ = await first.submit_job(new_job(), 10)
    assert await first.claim_jobs("one", 10, now(), lease=0.05)
    [delivery_id] = await deliveries_to(first, A, 1)
    assert await first.claim_deliveries("one", 10, now(), lease=0.05)
    [again] = await wait_for(lambda: second.claim_jobs("two", 10, now(), 30), timeout=10)
    assert again.id == job.id and again.lapses == 1
    [due] = await wait_for(lambda: second.claim_deliveries("two", 10, now(), 30), timeout=10)
    assert due.delivery.id == delivery_id and due.delivery.lapses == 1


async def test_an_endpoint_in_flight_limit_holds_across_instances(two):
    first, second = two
    ep = await first.create_endpoint(endpoint(max_in_flight=2), 1000)
    for _ in range(12):
        await ended(first, callback_url=None, endpoint_id=ep.id)
    held = {"now": 0, "most": 0}
    sent: list[str] = []

    async def work(store: Any, owner: str) -> None:
        while len(sent) < 12:
            claimed = await store.claim_deliveries(owner, 5, now(), 30, endpoint_room={})
            held["now"] += len(claimed)
            held["most"] = max(held["most"], held["now"])
            await asyncio.sleep(0.001)
            for due in claimed:
                held["now"] -= 1  # before the attempt commits: never counts more than is leased
                sent.append(due.delivery.id)
                await store.record_attempt(attempt(due.delivery.id))

    async with asyncio.timeout(30):
        await asyncio.gather(work(first, "one"), work(second, "two"))
    assert held["most"] == 2 and len(set(sent)) == 12
    # The caller's room narrows it further.
    await ended(first, callback_url=None, endpoint_id=ep.id)
    await ended(first, callback_url=None, endpoint_id=ep.id)
    assert len(await first.claim_deliveries("one", 5, now(), 30, endpoint_room={ep.id: 1})) == 1


async def test_an_endpoint_rate_limit_holds_across_instances(two):
    first, second = two
    ep = await first.create_endpoint(endpoint(rate_limit=10), 1000)
    for _ in range(16):
        await ended(first, callback_url=None, endpoint_id=ep.id)
    start = time.monotonic()
    taken = 0
    async with asyncio.timeout(30):
        while taken < 16:
            batches = await asyncio.gather(
                first.claim_deliveries("one", 16, now(), 30),
                second.claim_deliveries("two", 16, now(), 30),
            )
            taken += sum(len(batch) for batch in batches)
            # A full bucket (a second's worth, and a little) and what refilled since.
            assert taken <= 10.4 + 10 * (time.monotonic() - start)
            await asyncio.sleep(0.01)
    assert time.monotonic() - start >= 0.5


async def test_deliveries_handed_back_give_their_tokens_back(store):
    only_postgres(store)
    ep = await store.create_endpoint(endpoint(rate_limit=4), 1000)
    for _ in range(8):
        await ended(store, callback_url=None, endpoint_id=ep.id)
    taken = await store.claim_deliveries("me", 8, now(), FAR)
    assert len(taken) == 4  # the bucket's whole tokens
    await store.release_deliveries("me", ids(taken)[:3])  # held back here, unsent
    again = await store.claim_deliveries("me", 8, now(), FAR)
    # The three come back at once, on their refunded tokens, not a second later.
    assert sorted(ids(again)) == sorted(ids(taken)[:3])


async def test_instances_starting_at_once_migrate_once(postgres_url):
    stores = [PostgresStore(postgres_url, pool_size=1) for _ in range(4)]
    await asyncio.gather(*(each.open() for each in stores))
    try:
        async with stores[0]._connection() as connection:
            versions = await connection.fetch("SELECT version FROM schema_version")
        assert [row[0] for row in versions] == [1]
    finally:
        for each in stores:
            await each.close()


# PostgreSQL: a database that goes away and comes back


class Proxy:
    """A TCP relay to the database that can be cut and restored, as the server going down."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.listen_port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.listen_port)
        self.listen_port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        to_reader, to_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers |= {writer, to_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, to_writer), pipe(to_reader, writer))
        self._writers -= {writer, to_writer}


async def test_a_database_that_goes_away_answers_unavailable_then_works_again(postgres_url):
    server = urlsplit(postgres_url)
    proxy = Proxy(server.port or 5432)
    await proxy.start()
    dsn = f"postgresql://postgres:s3cret-pw@127.0.0.1:{proxy.listen_port}{server.path}"
    store = PostgresStore(dsn, pool_size=2)
    await store.open()
    try:
        await store.submit_job(new_job(), 10)
        await proxy.cut()
        calls = (lambda: store.submit_job(new_job(), 10), store.check_writable, store.ping)
        for call in calls:
            with pytest.raises(StoreUnavailable) as caught:
                await call()
            assert "cannot be reached" in caught.value.detail
            assert "s3cret-pw" not in caught.value.detail and caught.value.retry_after == 5
        await proxy.start()
        await store.check_writable()
        await store.submit_job(new_job(), 10)
        assert len((await store.list_jobs(JobFilter(tenant=None))).items) == 2
    finally:
        await store.close()
        await proxy.cut()


async def test_a_connection_killed_under_the_pool_fails_no_later_call(postgres_url):
    store = PostgresStore(postgres_url, pool_size=3)
    await store.open()
    try:
        await asyncio.gather(*(store.submit_job(new_job(), 100) for _ in range(6)))
        async with store._connection() as connection:
            await connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with contextlib.suppress(StoreUnavailable):
            await store.submit_job(new_job(), 100)
        for _ in range(5):
            await store.submit_job(new_job(), 100)
            await store.ping()
    finally:
        await store.close()


async def test_a_read_only_database_fails_writes_and_readiness_but_answers_reads(postgres_url):
    store = PostgresStore(postgres_url, pool_size=2)
    await store.open()
    try:
        job, _ = await store.submit_job(new_job(), 10)
        async with store._connection() as connection:
            await connection.execute("ALTER DATABASE " + urlsplit(postgres_url).path[1:]
                                     + " SET default_transaction_read_only = on")  # fmt: skip
            await connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        await store.close()
        await store.open()  # an up-to-date schema needs no write
        for call in (lambda: store.submit_job(new_job(), 10), store.check_writable):
            with pytest.raises(StoreUnavailable, match="it is read-only; nothing was written"):
                await call()
        assert await store.get_job(job.id, None) == job
    finally:
        await store.close()


async def test_an_unreachable_database_at_start_is_named_without_its_password():
    store = PostgresStore("postgresql://app:s3cret-pw@127.0.0.1:1/orders")
    with pytest.raises(StartupError) as caught:
        await store.open()
    assert "127.0.0.1:1/orders" in caught.value.detail
    assert "s3cret-pw" not in str(caught.value) and caught.value.__cause__ is None


async def test_the_server_url_names_a_database_of_its_own():
    async with fresh_postgres_url() as url:
        assert url == database_url(url.rsplit("/", 1)[1])
        assert url.rsplit("/", 1)[1].startswith("dt_")
