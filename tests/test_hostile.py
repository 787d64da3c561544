"""A hostile tenant, as one would probe the service from outside (loopback only).

Poison bodies and work that can never finish, a flood of hanging receivers
under many addresses and spellings, a stream subscriber that never reads,
a revoked key's open streams, and the small edges a prober tries next.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType

from dispatcher.api import stream
from dispatcher.api.context import SERVICES
from dispatcher.delivery.plan import finished
from dispatcher.ids import new_id, now
from dispatcher.store.records import JobStatus, NewJob
from dispatcher.store.sqlite import SQLiteStore
from tests.conftest import ADMIN_KEY, Api, Receiver, wait_for
from tests.support.process import Http, Server

pytestmark = pytest.mark.timeout(120)

# 1. Nothing runs forever

ESCAPED_SURROGATE = '{"type": "echo", "payload": "\\ud800"}'
POISON_BODIES = {
    "a surrogate's UTF-8 bytes": b'{"type": "echo", "payload": "\xed\xa0\x80"}',
    "UTF-16 with an escaped surrogate": ESCAPED_SURROGATE.encode("utf-16"),
    "UTF-16 without a byte order mark": '{"type": "echo", "payload": 1}'.encode("utf-16-le"),
    "UTF-32": ESCAPED_SURROGATE.encode("utf-32"),
    "Latin-1": '{"type": "echo", "payload": "caf\xe9"}'.encode("latin-1"),
    "a UTF-8 byte order mark": b'\xef\xbb\xbf{"type": "echo", "payload": 1}',
    "an escaped lone surrogate": ESCAPED_SURROGATE.encode(),
    "a 400-digit integer": b'{"type": "echo", "payload": ' + b"9" * 400 + b"}",
    "a negative 400-digit integer": b'{"type": "echo", "payload": -' + b"9" * 400 + b"}",
    "an infinite float": b'{"type": "echo", "payload": 1e400}',
}


@pytest.mark.parametrize("raw", POISON_BODIES.values(), ids=POISON_BODIES.keys())
async def test_poison_bodies_are_refused_and_store_nothing(api, raw):
    status, problem = await api.call(
        "POST", "/v1/jobs", data=raw, headers={"content-type": "application/json"}
    )
    assert status == 400, problem
    assert problem["status"] == 400
    status, jobs = await api.call("GET", "/v1/jobs")
    assert (status, jobs["items"]) == (200, [])


async def test_a_double_sized_integer_is_taken(api):
    status, job = await api.call(
        "POST", "/v1/jobs", data=b'{"type": "echo", "payload": ' + b"9" * 300 + b"}",
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert status == 202, job


def _store(api: Api) -> SQLiteStore:
    store = api.client.server.app[SERVICES].store
    assert isinstance(store, SQLiteStore)
    return store


def _new_job(job_type: str, payload: Any, **fields: Any) -> NewJob:
    values = dict(callback_url=None, endpoint_id=None, notify=None, metadata=None, deadline=None)
    values.update(fields)
    return NewJob(new_id("job"), "admin", job_type, payload, created_at=now(), **values)


async def test_a_job_whose_outcome_cannot_be_recorded_fails_and_is_delivered(api, make_receiver):
    # Past the edge (as a PostgreSQL row or an older version might hold it):
    # the guard behind the edge must end the job anyway, and say so.
    receiver = await make_receiver(200)
    job = _new_job("echo", "\ud800", callback_url=receiver.url)
    await _store(api).submit_job(job, 100)
    api.client.server.app[SERVICES].pool.wake()
    done = await api.job(job.id, wait=10)
    assert done["status"] == "failed", done
    assert done["error"]["type"] == "internal"
    assert "could not be recorded" in done["error"]["message"]
    [webhook] = await receiver.wait_for_requests(1)
    event = json.loads(webhook.body)
    assert event["type"] == "job.failed"
    assert event["data"]["error"]["type"] == "internal"
    assert event["data"]["payload"] == "?"


async def _prepare(path: Path, setup: Any) -> None:
    """Work left in the database by a process that died, before the app under test starts."""
    store = SQLiteStore(str(path))
    await store.open()
    try:
        await setup(store)
    finally:
        await store.close()


def _set_lapses(path: Path, table: str, lapses: int) -> None:
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE {table} SET lapses = ?", (lapses,))


async def test_a_job_that_keeps_losing_its_worker_is_failed_not_run_again(
    make_api, make_receiver, tmp_path
):
    receiver = await make_receiver(200)
    db = tmp_path / "dispatcher.db"
    # A job that ran three times already, each time until its process died.
    job = _new_job("sleep", {"seconds": 60}, callback_url=receiver.url)

    async def setup(store: SQLiteStore) -> None:
        await store.submit_job(job, 100)
        await store.claim_jobs("dead-process", 1, now(), lease=0.01)

    await _prepare(db, setup)
    _set_lapses(db, "jobs", 3)
    api = await make_api()
    done = await api.job(job.id, wait=10)
    assert done["status"] == "failed", done
    assert done["error"]["type"] == "abandoned"
    assert "4 times" in done["error"]["message"]
    [webhook] = await receiver.wait_for_requests(1)
    assert json.loads(webhook.body)["type"] == "job.failed"


async def test_a_delivery_that_keeps_losing_its_sender_is_failed(make_api, make_receiver, tmp_path):
    receiver = await make_receiver(200)
    db = tmp_path / "dispatcher.db"
    job = _new_job("echo", 1, callback_url=receiver.url)

    async def setup(store: SQLiteStore) -> None:
        await store.submit_job(job, 100)
        [claimed] = await store.claim_jobs("dead-process", 1, now(), lease=30)
        await store.finish_job(
            job.id, "dead-process", finished(claimed, JobStatus.SUCCEEDED, now())
        )
        await store.claim_deliveries("dead-process", 1, now(), lease=0.01)

    await _prepare(db, setup)
    _set_lapses(db, "deliveries", 3)
    api = await make_api()
    delivery = await api.settled_delivery(job.id)
    assert delivery["status"] == "failed"
    [attempt] = delivery["attempts"]
    assert "lost its sender 4 times" in attempt["error"]
    assert receiver.requests == []


async def test_lapsed_work_waits_its_turn_behind_older_due_work(tmp_path):
    store = SQLiteStore(str(tmp_path / "d.db"))
    await store.open()
    try:
        lapsed = _new_job("echo", "lapsed")
        await store.submit_job(lapsed, 100)
        [_] = await store.claim_jobs("dead-process", 1, now(), lease=10)
        queued = _new_job("echo", "queued")
        await store.submit_job(queued, 100)
        # Both are due 11 s on; the queued one since long before the lease ran out.
        later = now() + 11
        [first] = await store.claim_jobs("alive", 1, later, lease=30)
        [second] = await store.claim_jobs("alive", 1, later, lease=30)
    finally:
        await store.close()
    assert (first.id, first.lapses) == (queued.id, 0)
    assert (second.id, second.lapses) == (lapsed.id, 1)


# 2. Fair delivery slots


async def _hanging_receivers(make_receiver: Any, count: int) -> list[Receiver]:
    """Receivers that take a request and never answer, each on its own loopback address."""
    receivers = []
    for n in range(count):
        receiver = await make_receiver(200, host=f"127.0.0.{n + 2}")
        receiver.hang = asyncio.Event()
        receivers.append(receiver)
    return receivers


def _spellings(url: str) -> list[str]:
    """The same receiver by other names that aiohttp connects to: hex forms, IPv4-mapped IPv6."""
    host = url.split("//")[1].split(":")[0]
    d = int(host.split(".")[-1])
    spelled = (f"0x7f.{d}", f"0x7f0000{d:02x}", f"[::ffff:{host}]", f"[::ffff:7f00:{d:x}]")
    return [url.replace(host, name) for name in spelled]


async def test_a_flood_of_hanging_receivers_does_not_delay_another_tenants_webhook(
    make_api, make_receiver
):
    api = await make_api(delivery_timeout=60, workers=8)
    hostile, _ = await api.new_tenant("hostile")
    friendly, _ = await api.new_tenant("friendly")
    hanging = await _hanging_receivers(make_receiver, 20)
    healthy = await make_receiver(200)
    try:
        urls = [url for r in hanging for url in (r.url, *_spellings(r.url))]
        for n in range(320):
            await hostile.submit(type="echo", payload=n, callback_url=urls[n % len(urls)])

        def in_flight() -> int:
            return sum(len(r.requests) for r in hanging)

        # Every slot the hostile tenant may hold is held by a receiver that hangs.
        await wait_for(lambda: in_flight() >= 200, timeout=30)
        started = time.monotonic()
        job = await friendly.submit(type="echo", payload="mine", callback_url=healthy.url)
        await healthy.wait_for_requests(1, timeout=5)
        took = time.monotonic() - started
        print(f"{in_flight()} hostile attempts hanging; another tenant's webhook took {took:.3f}s")
        assert took < 1.0, f"another tenant's webhook took {took:.2f}s"
        assert (await friendly.settled_delivery(job["id"]))["status"] == "succeeded"
        assert in_flight() < 256, "the hostile tenant held every slot"
    finally:
        for receiver in hanging:
            receiver.hang.set()


async def test_spellings_of_one_address_share_its_slots(make_api, make_receiver):
    api = await make_api(delivery_timeout=60, delivery_per_host=3)
    [receiver] = await _hanging_receivers(make_receiver, 1)
    try:
        urls = [receiver.url, *_spellings(receiver.url)]
        for n in range(12):
            await api.submit(type="echo", payload=n, callback_url=urls[n % len(urls)])
        await receiver.wait_for_requests(3)
        # However it is spelled, the address has its share in flight.
        with pytest.raises(TimeoutError):
            await receiver.wait_for_requests(4, timeout=1)
    finally:
        receiver.hang.set()
    await receiver.wait_for_requests(12, timeout=20)


# 3. Bounded streams


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _small_window(addr_info: Any) -> socket.socket:
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=kind, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    return sock


async def _big_jobs(http: Http, server: Server, count: int) -> None:
    payload = "x" * 900_000
    last = None
    for _ in range(count):
        last = await http.submit(server, type="echo", payload=payload)
    assert last is not None
    await wait_for(lambda: _finished(http, server, last["id"]), timeout=60)


async def _finished(http: Http, server: Server, job_id: str) -> bool:
    return (await http.job(server, job_id))["status"] == "succeeded"


async def test_a_subscriber_that_never_reads_is_dropped_and_costs_no_memory(serve, http):
    server = await serve(DISPATCHER_WORKERS="4")
    await _big_jobs(http, server, 20)  # the allocator's steady state, before measuring
    before = _rss_bytes(server.pid)
    connector = aiohttp.TCPConnector(socket_factory=_small_window)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.ws_connect(
            server.url + "/v1/events/ws",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            compress=0,
            max_msg_size=0,
        ) as ws,
    ):
        await _big_jobs(http, server, 150)
        grown = _rss_bytes(server.pid) - before
        print(f"server RSS grew by {grown / 2**20:.1f} MiB over 150 jobs of 0.9 MB")
        assert grown < 150 * 2**20, f"the server grew by {grown / 2**20:.0f} MiB"
        async with asyncio.timeout(30):
            while (message := await ws.receive()).type is WSMsgType.TEXT:
                pass
    # Closed as lagging, or cut when it would not take the close frame in time.
    assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR), message
    assert ws.close_code in (stream.LAGGING, WSCloseCode.ABNORMAL_CLOSURE), ws.close_code


# 4. Revocation ends streams


async def test_revoking_a_key_closes_its_streams_within_a_second(api):
    tenant, _ = await api.new_tenant("acme")
    _, keys = await api.call("GET", "/v1/keys")
    prefix = next(k["prefix"] for k in keys["items"] if k["tenant"] == "acme")
    job = await tenant.submit(type="sleep", payload={"seconds": 30})
    async with (
        api.client.ws_connect("/v1/events/ws", headers=tenant.headers()) as dashboard,
        api.client.ws_connect(f"/v1/jobs/{job['id']}/ws", headers=tenant.headers()) as one,
        api.client.get(f"/v1/jobs/{job['id']}/events", headers=tenant.headers()) as sse,
    ):
        assert (await one.receive_json(timeout=5))["id"] == job["id"]
        assert sse.status == 200
        await sse.content.readuntil(b"\n\n")
        started = time.monotonic()
        status, _ = await api.call("DELETE", f"/v1/keys/{prefix}")
        assert status == 204
        # Within a second on an idle machine; the bound here leaves room for a loaded CI.
        async with asyncio.timeout(5):
            for ws in (dashboard, one):
                while (message := await ws.receive()).type is WSMsgType.TEXT:
                    pass
                assert message.type is WSMsgType.CLOSE
                assert ws.close_code == stream.REVOKED == 1008
            assert await sse.content.read() == b""
        print(f"revoked streams closed in {time.monotonic() - started:.3f}s")
    status, _ = await tenant.call("GET", f"/v1/jobs/{job['id']}")
    assert status == 401


# 5. The small edges


async def test_a_retry_after_of_other_digits_keeps_the_status(make_api, make_receiver):
    api = await make_api(retry_schedule="")
    receiver = await make_receiver((429, {"Retry-After": "\u00b2"}))
    job = await api.submit(type="echo", payload=1, callback_url=receiver.url)
    delivery = await api.settled_delivery(job["id"])
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] == 429
    assert attempt["error"] == "HTTP 429"


async def test_a_keys_cursor_past_a_64_bit_rowid_is_a_422(api):
    status, problem = await api.call("GET", "/v1/keys?cursor=OTk5OTk5OTk5OTk5OTk5OTk5OTk")
    assert status == 422, problem


@pytest.mark.parametrize("address", ["ops@example.com\u2028", "ops@exa\u2029mple.com", "o ps@x.io"])
async def test_an_email_address_that_would_break_its_header_is_a_422(api, address):
    status, problem = await api.call(
        "POST", "/v1/jobs", json={"type": "echo", "payload": 1, "notify": {"email": address}}
    )
    assert status == 422, problem


# Jobs: fair between tenants too


async def test_one_tenants_long_jobs_never_hold_every_worker(make_api):
    api = await make_api(workers=8)
    hostile, _ = await api.new_tenant("hostile")
    friendly, _ = await api.new_tenant("friendly")
    long_jobs = [await hostile.submit(type="sleep", payload={"seconds": 60}) for _ in range(20)]

    async def running() -> int:
        states = [await hostile.job(job["id"]) for job in long_jobs]
        return sum(state["status"] == "running" for state in states)

    await wait_for(lambda: _at_least(running, 7))
    started = time.monotonic()
    mine = await friendly.submit(type="echo", payload="mine")
    done = await friendly.job(mine["id"], wait=5)
    took = time.monotonic() - started
    assert done["status"] == "succeeded", done
    assert took < 1.0, f"another tenant's job waited {took:.2f}s"
    assert await running() < 8


async def _at_least(count: Any, n: int) -> bool:
    return await count() >= n


async def test_one_tenant_cannot_fill_the_queue_for_everyone(make_api):
    api = await make_api(workers=1, max_queue=100, max_queue_per_tenant=3, shutdown_grace=0)
    hostile, _ = await api.new_tenant("hostile")
    friendly, _ = await api.new_tenant("friendly")
    blocker = await hostile.submit(type="sleep", payload={"seconds": 60})
    await wait_for(lambda: _status_is(hostile, blocker["id"], "running"))
    for n in range(3):
        await hostile.submit(type="echo", payload=n)
    status, problem = await hostile.call("POST", "/v1/jobs", json={"type": "echo", "payload": 4})
    assert status == 503, problem
    assert "share" in problem["detail"]
    status, job = await friendly.call("POST", "/v1/jobs", json={"type": "echo", "payload": 1})
    assert status == 202, job


async def _status_is(api: Api, job_id: str, status: str) -> bool:
    return (await api.job(job_id))["status"] == status


async def test_one_tenants_open_streams_are_bounded_and_leave_room_for_others(make_api):
    api = await make_api(max_requests_per_tenant=3)
    hostile, _ = await api.new_tenant("hostile")
    friendly, _ = await api.new_tenant("friendly")
    sockets = [
        await api.client.ws_connect("/v1/events/ws", headers=hostile.headers()) for _ in range(3)
    ]
    try:
        status, problem = await hostile.call("GET", "/v1/jobs")
        assert status == 429, problem
        async with api.client.get("/v1/events/ws", headers=hostile.headers()) as refused:
            assert refused.status == 429
            assert refused.headers["Retry-After"] == "1"
        status, _ = await friendly.call("GET", "/v1/jobs")
        assert status == 200
    finally:
        for ws in sockets:
            await ws.close()
    await wait_for(lambda: _answers(hostile, 200))


async def _answers(api: Api, expected: int) -> bool:
    status, _ = await api.call("GET", "/v1/jobs")
    return status == expected


async def test_revoking_a_key_ends_its_long_polls(api):
    tenant, _ = await api.new_tenant("acme")
    _, keys = await api.call("GET", "/v1/keys")
    prefix = next(k["prefix"] for k in keys["items"] if k["tenant"] == "acme")
    job = await tenant.submit(type="sleep", payload={"seconds": 30})
    waiting = asyncio.create_task(tenant.call("GET", f"/v1/jobs/{job['id']}?wait=30"))
    await wait_for(lambda: _long_polls(api) > 0)
    started = time.monotonic()
    assert (await api.call("DELETE", f"/v1/keys/{prefix}"))[0] == 204
    status, problem = await asyncio.wait_for(waiting, 1)
    assert status == 401, problem
    assert time.monotonic() - started < 1


def _long_polls(api: Api) -> int:
    hub = api.client.server.app[SERVICES].hub
    return len(hub._by_key)  # subscriptions opened with a revocable key


async def test_token_is_taken_only_by_the_stream_routes(api):
    job = await api.submit(type="echo", payload=1)
    status, problem = await api.call("GET", f"/v1/jobs/{job['id']}?token=anything")
    assert status == 422, problem
