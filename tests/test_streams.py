"""Live job streams: the job WebSocket, the tenant WebSocket and the job SSE stream."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from dispatcher import events
from dispatcher.api import stream
from dispatcher.api.context import SERVICES
from dispatcher.store.records import Job, JobStatus
from tests.conftest import Api, wait_for

FINISHED = {"succeeded", "failed", "cancelled"}
UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


async def messages_until_close(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """Every JSON message the server sends, up to its close frame."""
    received = []
    while True:
        message = await ws.receive(timeout=10)
        if message.type is not WSMsgType.TEXT:
            assert message.type is WSMsgType.CLOSE, message
            return received
        received.append(json.loads(message.data))


async def finished(api: Api, **job: Any) -> dict[str, Any]:
    submitted = await api.submit(**job)
    done = await api.job(submitted["id"], wait=10)
    assert done["status"] in FINISHED, done
    return done


def slow_job() -> dict[str, Any]:
    return {"type": "sleep", "payload": {"seconds": 0.5, "result": "slept"}}


@dataclass
class Sse:
    id: str | None = None
    event: str | None = None
    data: str | None = None
    comment: str | None = None

    def job(self) -> dict[str, Any]:
        assert self.event == "job" and self.data is not None, self
        return json.loads(self.data)


async def sse_iter(response: aiohttp.ClientResponse) -> AsyncIterator[Sse]:
    """Each message and comment of an SSE response as it arrives."""
    current = Sse()
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith(":"):
            yield Sse(comment=line[1:].strip())
        elif line:
            name, _, value = line.partition(":")
            setattr(current, name, value.removeprefix(" "))
        elif current != Sse():
            yield current
            current = Sse()


async def sse_messages(response: aiohttp.ClientResponse) -> list[Sse]:
    """Every message and comment of an SSE response, up to its end."""
    async with asyncio.timeout(10):
        return [message async for message in sse_iter(response)]


async def sse_jobs(api: Api, job_id: str, last_event_id: str | None = None) -> list[Sse]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else None
    async with api.client.get(f"/v1/jobs/{job_id}/events", headers=api.headers(headers)) as r:
        assert r.status == 200, await r.text()
        assert r.content_type == "text/event-stream"
        return [message for message in await sse_messages(r) if message.comment is None]


async def problem_status(client: TestClient, path: str, headers: dict[str, str]) -> int:
    async with client.get(path, headers=headers) as response:
        assert response.content_type == "application/problem+json"
        body = await response.json(content_type=None)
        assert body["status"] == response.status
        return response.status


# The job WebSocket


async def test_job_socket_sends_each_status_then_the_result_then_closes(api):
    job = await api.submit(**slow_job())
    async with api.client.ws_connect(f"/v1/jobs/{job['id']}/ws", headers=api.headers()) as ws:
        received = await messages_until_close(ws)
        assert ws.close_code == aiohttp.WSCloseCode.OK
    assert received[0]["status"] in ("queued", "running")
    assert received[-1]["status"] == "succeeded"
    assert received[-1]["result"] == "slept"
    statuses = [message["status"] for message in received]
    assert len(statuses) == len(set(statuses)), "a status was sent twice"


async def test_job_socket_after_finish_sends_the_job_as_get_shows_it_then_closes(api):
    done = await finished(api, type="echo", payload={"a": 1})
    async with api.client.ws_connect(f"/v1/jobs/{done['id']}/ws", headers=api.headers()) as ws:
        received = await messages_until_close(ws)
        assert ws.close_code == aiohttp.WSCloseCode.OK
    assert received == [done]


async def test_job_socket_takes_the_key_as_token_query(api):
    done = await finished(api, type="echo", payload=1)
    async with api.client.ws_connect(f"/v1/jobs/{done['id']}/ws?token={api.key}") as ws:
        assert await messages_until_close(ws) == [done]


async def test_job_socket_without_a_key_is_a_401_problem(api):
    done = await finished(api, type="echo", payload=1)
    assert await problem_status(api.client, f"/v1/jobs/{done['id']}/ws", UPGRADE) == 401


async def test_job_socket_for_another_tenants_job_is_a_404_problem(api):
    acme, _ = await api.new_tenant("acme")
    done = await finished(api, type="echo", payload=1)
    headers = acme.headers(UPGRADE)
    assert await problem_status(api.client, f"/v1/jobs/{done['id']}/ws", headers) == 404


async def test_job_socket_for_an_unknown_job_is_a_404_problem(api):
    headers = api.headers(UPGRADE)
    assert await problem_status(api.client, "/v1/jobs/job_nope/ws", headers) == 404


async def test_200_websocket_waiters_on_one_job_all_get_its_final_state(make_api):
    api = await make_api(workers=1, shutdown_grace=0)
    # The only worker is busy, so the job stays queued until it is cancelled:
    # every waiter is connected before it finishes, without racing a timer.
    blocker = await api.submit(type="sleep", payload={"seconds": 30})
    await wait_for(lambda: _status_is(api, blocker["id"], "running"))
    job = await api.submit(type="echo", payload=1)
    url = api.client.make_url(f"/v1/jobs/{job['id']}/ws")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = await asyncio.gather(
            *(session.ws_connect(url, headers=api.headers()) for _ in range(200))
        )
        firsts = await asyncio.gather(*(ws.receive_json(timeout=10) for ws in sockets))
        assert {first["status"] for first in firsts} == {"queued"}
        status, _ = await api.call("POST", f"/v1/jobs/{job['id']}/cancel")
        assert status == 200
        finals = await asyncio.gather(*(messages_until_close(ws) for ws in sockets))
        await asyncio.gather(*(ws.close() for ws in sockets))
    assert [[final["status"] for final in got] for got in finals] == [["cancelled"]] * 200


async def _status_is(api: Api, job_id: str, status: str) -> bool:
    return (await api.job(job_id))["status"] == status


# The tenant WebSocket


async def _events_until(
    ws: aiohttp.ClientWebSocketResponse, done: set[str]
) -> list[dict[str, Any]]:
    """Job events from a tenant stream until every job in `done` has succeeded."""
    received: list[dict[str, Any]] = []
    while not done <= {e["id"] for e in received if e["status"] == "succeeded"}:
        received.append(await ws.receive_json(timeout=10))
    return received


async def test_tenant_stream_gets_every_event_of_its_own_jobs_only(api):
    acme, _ = await api.new_tenant("acme")
    globex, _ = await api.new_tenant("globex")
    async with api.client.ws_connect("/v1/events/ws", headers=acme.headers()) as ws:
        # Finished first: had the stream been going to carry it, it would come first.
        other = await finished(globex, type="echo", payload="theirs")
        first = await acme.submit(type="echo", payload=1)
        second = await acme.submit(type="echo", payload=2)
        received = await _events_until(ws, {first["id"], second["id"]})
    assert other["id"] not in {event["id"] for event in received}
    for job in (first, second):
        statuses = [event["status"] for event in received if event["id"] == job["id"]]
        assert statuses == ["queued", "running", "succeeded"]


async def test_admin_stream_gets_every_tenants_events(api):
    acme, _ = await api.new_tenant("acme")
    globex, _ = await api.new_tenant("globex")
    async with api.client.ws_connect("/v1/events/ws", headers=api.headers()) as ws:
        jobs = [
            await acme.submit(type="echo", payload=1),
            await globex.submit(type="echo", payload=2),
        ]
        received = await _events_until(ws, {job["id"] for job in jobs})
    assert {event["id"] for event in received} == {job["id"] for job in jobs}


async def test_tenant_stream_takes_the_key_as_token_query(api):
    acme, _ = await api.new_tenant("acme")
    async with api.client.ws_connect(f"/v1/events/ws?token={acme.key}") as ws:
        job = await acme.submit(type="echo", payload=1)
        received = await _events_until(ws, {job["id"]})
    assert received[-1]["result"] == 1


async def test_tenant_stream_pings_while_quiet(api, monkeypatch):
    monkeypatch.setattr(stream, "HEARTBEAT_SECONDS", 0.05)
    async with api.client.ws_connect("/v1/events/ws", headers=api.headers(), autoping=False) as ws:
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.PING


async def test_tenant_stream_stays_open_through_a_burst_of_submissions(api):
    # A dashboard reading as fast as it can, while 300 jobs arrive at once:
    # about 900 events, far more than a per-job queue holds.
    async with api.client.ws_connect("/v1/events/ws", headers=api.headers()) as ws:
        jobs = await asyncio.gather(*(api.submit(type="echo", payload=n) for n in range(300)))
        received = await _events_until(ws, {job["id"] for job in jobs})
        assert not ws.closed
    by_job: dict[str, list[str]] = {}
    for event in received:
        by_job.setdefault(event["id"], []).append(event["status"])
    assert {job["id"]: by_job.get(job["id"]) for job in jobs} == {
        job["id"]: ["queued", "running", "succeeded"] for job in jobs
    }


SMALL_QUEUE = 64


@pytest.fixture
def small_tenant_queue(monkeypatch: pytest.MonkeyPatch) -> int:
    """A tenant stream's queue small enough for a test to overflow it quickly."""
    monkeypatch.setattr(events, "TENANT_QUEUE_SIZE", SMALL_QUEUE)
    return SMALL_QUEUE


def _small_window(addr_info: Any) -> socket.socket:
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=kind, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    return sock


async def _flood(api: Api, queue_size: int) -> int:
    """Enough job events to fill a connection's buffers and then the hub's queue."""
    # Large jobs fill the server's send buffer (a few MiB); small ones then
    # overflow the subscriber's queue quickly.
    big = os.urandom(100_000).hex()
    jobs = [await api.submit(type="echo", payload=big) for _ in range(20)]
    jobs += [await api.submit(type="echo", payload=n) for n in range(2 * queue_size)]
    await api.job(jobs[-1]["id"], wait=10)
    return 3 * len(jobs)  # queued, running, succeeded


async def test_tenant_stream_drops_a_consumer_that_does_not_read(api, small_tenant_queue):
    # A real client that stops reading: aiohttp stops taking bytes off the socket
    # once 128 KiB wait unread, and a fixed 16 KiB receive window keeps the kernel
    # from absorbing the rest.
    connector = aiohttp.TCPConnector(socket_factory=_small_window)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = api.client.make_url("/v1/events/ws")
        async with session.ws_connect(url, headers=api.headers(), compress=0) as ws:
            published = await _flood(api, small_tenant_queue)
            received = 0
            while (message := await ws.receive(timeout=10)).type is WSMsgType.TEXT:
                received += 1
            assert message.type is WSMsgType.CLOSE
            assert ws.close_code == stream.LAGGING == 1013
            assert message.extra == stream.LAGGING_REASON
    assert received < published, "the stream was buffered, not dropped"


async def test_tenant_stream_cuts_a_consumer_that_will_not_take_the_close(
    api, monkeypatch, small_tenant_queue
):
    # With no time to take what is buffered, the connection is cut at once
    # rather than held open (and its buffer kept) for a close frame.
    monkeypatch.setattr(stream, "CLOSE_TIMEOUT", 0)
    connector = aiohttp.TCPConnector(socket_factory=_small_window)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = api.client.make_url("/v1/events/ws")
        async with session.ws_connect(url, headers=api.headers(), compress=0) as ws:
            await _flood(api, small_tenant_queue)
            while (message := await ws.receive(timeout=10)).type is WSMsgType.TEXT:
                pass
            assert message.type is not WSMsgType.CLOSE, "a close frame was sent"
            assert ws.close_code != stream.LAGGING


# The job SSE stream


async def test_sse_sends_each_status_with_increasing_ids_then_closes(api):
    job = await api.submit(**slow_job())
    received = await sse_jobs(api, job["id"])
    assert received[0].job()["status"] in ("queued", "running")
    assert received[-1].job()["status"] == "succeeded"
    assert received[-1].job()["result"] == "slept"
    ids = [int(message.id or "") for message in received]
    assert ids == sorted(set(ids)), "ids must strictly increase"


async def test_sse_after_finish_sends_the_job_as_get_shows_it_then_closes(api):
    done = await finished(api, type="echo", payload={"a": 1})
    [message] = await sse_jobs(api, done["id"])
    assert message.event == "job"
    assert message.job() == done
    assert message.id is not None and message.id.isdigit()


async def test_sse_ids_keep_increasing_across_a_retry(make_api):
    api = await make_api(handlers="tests.support.handlers")
    name = os.urandom(8).hex()
    job = await api.submit(type="flaky", payload={"name": name, "succeed_on": 3})
    received = await sse_jobs(api, job["id"])
    statuses = [message.job()["status"] for message in received]
    # Queued again after each of two runs (the most flaky allows); the stream may join late.
    every = ["queued", "running"] * 3 + ["succeeded"]
    assert statuses == every[-len(statuses) :]
    ids = [int(message.id or "") for message in received]
    assert ids == sorted(set(ids)), "ids must strictly increase"


async def test_sse_reconnect_with_the_final_id_gets_204_and_no_repeat(api):
    done = await finished(api, type="echo", payload=1)
    [final] = await sse_jobs(api, done["id"])
    headers = api.headers({"Last-Event-ID": final.id or ""})
    async with api.client.get(f"/v1/jobs/{done['id']}/events", headers=headers) as response:
        assert response.status == 204
        assert await response.read() == b""


async def test_sse_reconnect_with_an_earlier_id_gets_only_the_final_state(api):
    job = await api.submit(**slow_job())
    path = f"/v1/jobs/{job['id']}/events"
    async with (
        api.client.get(path, headers=api.headers()) as response,
        aclosing(sse_iter(response)) as messages,
    ):
        first = await anext(messages)
    assert first.job()["status"] in ("queued", "running")
    await api.job(job["id"], wait=10)
    received = await sse_jobs(api, job["id"], last_event_id=first.id)
    assert [message.job()["status"] for message in received] == ["succeeded"]
    assert int(received[0].id or "") > int(first.id or "")


async def test_sse_ignores_an_invalid_last_event_id(api):
    done = await finished(api, type="echo", payload=1)
    received = await sse_jobs(api, done["id"], last_event_id="not-a-number")
    assert [message.job() for message in received] == [done]


async def test_sse_takes_the_key_as_token_query(api):
    done = await finished(api, type="echo", payload=1)
    async with api.client.get(f"/v1/jobs/{done['id']}/events?token={api.key}") as response:
        assert response.status == 200
        [message] = await sse_messages(response)
    assert message.job() == done


async def test_sse_for_an_unknown_job_is_a_404_problem(api):
    assert await problem_status(api.client, "/v1/jobs/job_nope/events", api.headers()) == 404


async def test_sse_without_a_key_is_a_401_problem(api):
    assert await problem_status(api.client, "/v1/jobs/job_nope/events", {}) == 401


async def test_sse_sends_ping_comments_while_quiet(api, monkeypatch):
    monkeypatch.setattr(stream, "HEARTBEAT_SECONDS", 0.05)
    job = await api.submit(**slow_job())
    async with api.client.get(f"/v1/jobs/{job['id']}/events", headers=api.headers()) as r:
        received = await sse_messages(r)
    assert Sse(comment="ping") in received
    assert received[-1].job()["status"] == "succeeded"


# Shutdown: the hub closes, and every stream ends at once


def _hub(api: Api) -> events.EventHub:
    return api.client.server.app[SERVICES].hub


async def _running(api: Api) -> dict[str, Any]:
    job = await api.submit(type="sleep", payload={"seconds": 30})
    await wait_for(lambda: _status_is(api, job["id"], "running"))
    return job


async def _closed_with_going_away(ws: aiohttp.ClientWebSocketResponse) -> None:
    async with asyncio.timeout(5):
        while (message := await ws.receive()).type is WSMsgType.TEXT:
            pass
    assert message.type is WSMsgType.CLOSE, message
    assert ws.close_code == stream.GOING_AWAY == 1001
    assert message.extra == stream.GOING_AWAY_REASON


async def test_hub_close_ends_a_job_socket_with_going_away(api):
    job = await _running(api)
    async with api.client.ws_connect(f"/v1/jobs/{job['id']}/ws", headers=api.headers()) as ws:
        assert (await ws.receive_json(timeout=5))["status"] == "running"
        _hub(api).close()
        await _closed_with_going_away(ws)


async def test_hub_close_ends_a_tenant_socket_with_going_away(api):
    async with api.client.ws_connect("/v1/events/ws", headers=api.headers()) as ws:
        job = await api.submit(type="echo", payload=1)
        await _events_until(ws, {job["id"]})
        _hub(api).close()
        await _closed_with_going_away(ws)


async def test_hub_close_ends_an_sse_stream(api):
    job = await _running(api)
    path = f"/v1/jobs/{job['id']}/events"
    async with (
        api.client.get(path, headers=api.headers()) as response,
        aclosing(sse_iter(response)) as messages,
    ):
        first = await anext(messages)
        assert first.job()["status"] == "running"
        _hub(api).close()
        async with asyncio.timeout(5):
            rest = [message async for message in messages]
    assert [message for message in rest if message.comment is None] == []


@pytest.mark.parametrize("path", ["/v1/jobs/{id}/ws", "/v1/events/ws", "/v1/jobs/{id}/events"])
async def test_a_stream_asked_for_after_close_is_a_503_problem(api, path):
    job = await api.submit(type="echo", payload=1)
    _hub(api).close()
    headers = api.headers(UPGRADE if path.endswith("/ws") else None)
    assert await problem_status(api.client, path.format(id=job["id"]), headers) == 503


async def test_a_long_poll_answers_at_once_after_close(api):
    job = await _running(api)
    _hub(api).close()
    async with asyncio.timeout(5):
        answered = await api.job(job["id"], wait=30)
    assert answered["status"] == "running"


async def test_hub_close_wakes_a_waiting_subscriber_and_ends_later_ones():
    hub = events.EventHub()
    with hub.job("job_x") as waiting, hub.tenant(None) as dashboard:
        pending = asyncio.create_task(waiting.next(within=30))
        await asyncio.sleep(0)
        hub.close()
        async with asyncio.timeout(1):
            assert await pending is None
            assert await dashboard.next() is None
    with hub.tenant("acme") as later:
        assert later.closed
        async with asyncio.timeout(1):
            assert await later.next(within=30) is None


@pytest.mark.parametrize(
    ("status", "created", "started", "finished_at", "expected"),
    [
        ("queued", 1.0, None, None, 1000),
        ("running", 1.0, 2.0, None, 2000),
        ("succeeded", 1.0, 2.0, 3.0, 3000),
        # Steps in the same millisecond still get increasing ids.
        ("running", 1.0, 1.0, None, 1001),
        ("succeeded", 1.0, 1.0, 1.0, 1003),
        # Queued again after a run (Retry): just after that run's start.
        ("queued", 1.0, 2.0, None, 2001),
        ("cancelled", 1.0, None, 1.0, 1002),
    ],
)
def test_event_ids_follow_the_time_of_each_status(status, created, started, finished_at, expected):
    job = Job(
        id="job_x", tenant="t", type="echo", status=JobStatus(status), payload=None,
        result=None, error=None, callback_url=None, endpoint_id=None, notify=None,
        metadata=None, deadline=None, created_at=created, started_at=started,
        finished_at=finished_at,
    )  # fmt: skip
    assert stream.event_id(job) == expected
