"""Job events as they happen: WebSocket and Server-Sent Events.

Every stream subscribes to the hub before it reads the job, so a change made
between the read and the subscription is not missed. A consumer that falls
behind the hub's bounded queue is dropped (WebSocket close 1013; an SSE
response simply ends and the client resumes with `Last-Event-ID`), never
buffered without bound. Revoking the key a stream was opened with ends it
(WebSocket close 1008). At shutdown the hub closes and every stream ends at
once (WebSocket close 1001; an SSE response ends), so that none holds the
process; a stream asked for while shutting down is a 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing, suppress
from enum import StrEnum
from typing import Any

from aiohttp import WSCloseCode, web

from dispatcher.api.context import Services, principal, services
from dispatcher.errors import NotFound
from dispatcher.events import Ending, Event, Subscription
from dispatcher.ids import is_id
from dispatcher.store.records import Job, JobStatus

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

# WebSocket pings and SSE `: ping` comments; read at each use so tests can shrink it.
HEARTBEAT_SECONDS = 15.0
# How long a closing stream waits for the client to take what is already buffered
# (the close frame included) before the connection is cut.
CLOSE_TIMEOUT = 10.0
# At shutdown, for a client that is not taking what is buffered: shorter than
# CLOSE_TIMEOUT, since the whole process is waiting.
SHUTDOWN_TIMEOUT = 2.0
LAGGING = WSCloseCode.TRY_AGAIN_LATER
LAGGING_REASON = "too slow: events were dropped; reconnect to resume"
GOING_AWAY = WSCloseCode.GOING_AWAY
GOING_AWAY_REASON = "server shutting down; reconnect"
REVOKED = WSCloseCode.POLICY_VIOLATION
REVOKED_REASON = "the key this stream was opened with has been revoked"
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    # Proxies such as nginx would otherwise hold events back in their buffers.
    "X-Accel-Buffering": "no",
}
SSE_PING = b": ping\n\n"
MAX_EVENT_ID_DIGITS = 18


class End(StrEnum):
    """Why a stream stops: the job finished, the client left, or its subscription ended."""

    FINISHED = "finished"
    GONE = "gone"
    LAGGING = Ending.LAGGING.value
    REVOKED = Ending.REVOKED.value
    SHUTDOWN = Ending.SHUTDOWN.value


def event_id(job: Job) -> int:
    """When the job reached its current status, in integer milliseconds.

    queued → created_at, running → started_at, finished → finished_at, each made at
    least one more than the step before, so the ids of one job strictly increase
    even when two steps fall in the same millisecond. A job queued again after a
    run (a `Retry`) takes the id just after that run's start.
    """
    at = _ms(job.created_at)
    if job.started_at is not None:
        at = max(_ms(job.started_at), at + 1)
        if job.status is JobStatus.QUEUED:
            return at + 1
    if job.status.finished and job.finished_at is not None:
        return max(_ms(job.finished_at), at + 2)
    return at


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _last_event_id(request: web.Request) -> int:
    """The `Last-Event-ID` a reconnecting client sends; anything but an id we gave is ignored."""
    value = request.headers.get("Last-Event-ID", "").strip()
    if value.isascii() and value.isdigit() and len(value) <= MAX_EVENT_ID_DIGITS:
        return int(value)
    return 0


def _ensure_open(events: Subscription) -> None:
    """A stream asked for during shutdown is a 503 before any upgrade: it would end at once."""
    if events.closed:
        raise web.HTTPServiceUnavailable(
            text="the server is shutting down; reconnect", headers={"Retry-After": "1"}
        )


async def _find_job(svc: Services, job_id: str, scope: str | None) -> Job | None:
    return await svc.store.get_job(job_id, scope) if is_id(job_id, "job") else None


async def _read_job(svc: Services, job_id: str, scope: str | None) -> Job:
    job = await _find_job(svc, job_id, scope)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


async def _job_changes(
    svc: Services, events: Subscription, job: Job, scope: str | None, after: int
) -> AsyncIterator[Event | None]:
    """The job now and at each change of status until it finishes or the subscription ends.

    None when a heartbeat is due. A state goes out only if its event id is past
    the last one sent (or `after`) and its status differs: an event queued before
    the first read may be older than what that read returned.
    """
    sent: JobStatus | None = None
    state = Event.of(job)
    while True:
        job = state.job
        if event_id(job) > after and job.status is not sent:
            yield state
            after, sent = event_id(job), job.status
        if job.status.finished:
            return
        event = await events.next(within=HEARTBEAT_SECONDS)
        if events.closed:
            return
        if event is not None:
            state = event
            continue
        yield None
        # A change another instance made reaches the hub through the change
        # feed; should the feed have missed it, a quiet spell catches it.
        found = await _find_job(svc, job.id, scope)
        if found is None:
            return
        state = Event.of(found)


async def _every_event(events: Subscription) -> AsyncIterator[Event]:
    """Every event until the subscription ends."""
    while (event := await events.next()) is not None:
        yield event


@routes.get("/v1/jobs/{id}/ws", allow_head=False)
async def job_socket(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    who = principal(request)
    scope = who.scope()
    with svc.hub.job(request.match_info["id"], who.prefix) as events:
        _ensure_open(events)
        # Read after subscribing, and before upgrading so a 404 is a problem answer.
        job = await _read_job(svc, request.match_info["id"], scope)
        ws = await _accept(request)
        await _serve_socket(request, ws, events, _job_changes(svc, events, job, scope, 0))
    return ws


@routes.get("/v1/events/ws", allow_head=False)
async def tenant_socket(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    who = principal(request)
    with svc.hub.tenant(who.scope(), who.prefix) as events:
        _ensure_open(events)
        ws = await _accept(request)
        await _serve_socket(request, ws, events, _every_event(events))
    return ws


@routes.get("/v1/jobs/{id}/events", allow_head=False)
async def job_events(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    who = principal(request)
    scope = who.scope()
    after = _last_event_id(request)
    with svc.hub.job(request.match_info["id"], who.prefix) as events:
        _ensure_open(events)
        job = await _read_job(svc, request.match_info["id"], scope)
        if job.status.finished and event_id(job) <= after:
            # The client has the final state. 204 tells EventSource to stop
            # reconnecting; a 200 that ends at once would have it retry forever.
            return web.Response(status=204)
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        await _serve_sse(request, response, events, _job_changes(svc, events, job, scope, after))
    return response


async def _accept(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS, timeout=CLOSE_TIMEOUT)
    await ws.prepare(request)
    return ws


async def _serve_socket(
    request: web.Request,
    ws: web.WebSocketResponse,
    events: Subscription,
    messages: AsyncIterator[Event | None],
) -> None:
    sender = asyncio.create_task(_send_each(ws, events, messages))
    ended = asyncio.create_task(events.wait_ended())
    reader = asyncio.create_task(_until_client_leaves(ws))
    try:
        end = await _settle(events, sender, ended, reader)
        if end is None and reader.done():
            return  # the client left while nothing was being sent
        if end in (End.LAGGING, None):
            _log_dropped(request)
        if end is None:
            _cut(request)
        else:
            await _close_socket(ws, end)
    finally:
        await _cancel(sender, ended, reader)
        if ws.close_code == WSCloseCode.ABNORMAL_CLOSURE:
            # aiohttp closes an abnormal connection gracefully, which waits
            # forever on a client that does not read.
            _cut(request)


CLOSE_CODES = {
    End.LAGGING: (LAGGING, LAGGING_REASON),
    End.REVOKED: (REVOKED, REVOKED_REASON),
    End.SHUTDOWN: (GOING_AWAY, GOING_AWAY_REASON),
}


async def _close_socket(ws: web.WebSocketResponse, end: End) -> None:
    code, reason = CLOSE_CODES.get(end, (WSCloseCode.OK, ""))
    # A timeout leaves the close code abnormal, and the connection is cut.
    with suppress(TimeoutError):
        async with asyncio.timeout(_patience(end)):
            await ws.close(code=code, message=reason.encode())


async def _serve_sse(
    request: web.Request,
    response: web.StreamResponse,
    events: Subscription,
    messages: AsyncIterator[Event | None],
) -> None:
    writer = asyncio.create_task(_write_each(response, events, messages))
    ended = asyncio.create_task(events.wait_ended())
    try:
        end = await _settle(events, writer, ended)
        if end in (End.LAGGING, None):
            _log_dropped(request)
        if end is None:
            _cut(request)
        elif end is not End.GONE:
            # An ended response tells EventSource to reconnect, with Last-Event-ID.
            async with asyncio.timeout(_patience(end)):
                await response.write_eof()
    except TimeoutError:
        _cut(request)
    except ConnectionResetError:
        pass
    finally:
        await _cancel(writer, ended)


def _patience(end: End | Ending | None) -> float:
    """How long a closing stream's last writes may take; short when the process is stopping."""
    return SHUTDOWN_TIMEOUT if end == End.SHUTDOWN else CLOSE_TIMEOUT


# How often a writer stuck behind a client that does not read is looked at
# while it is given time to finish, so that a shutdown shortens the wait.
SETTLE_STEP = 0.25


async def _settle(
    events: Subscription,
    writer: asyncio.Task[End],
    ended: asyncio.Task[None],
    *others: asyncio.Task[Any],
) -> End | None:
    """How the writer ended; None if it is still stuck behind a client that does not read.

    When the subscription ends (lagging, revoked) the writer is not cancelled
    but given CLOSE_TIMEOUT to finish the write it is blocked in, after which
    it sees the end and stops by itself: aiohttp shares one drain future among
    a connection's writers, and cancelling a task waiting on it would break
    the closing write's wait too. At shutdown it gets SHUTDOWN_TIMEOUT.
    """
    await asyncio.wait((writer, ended, *others), return_when=asyncio.FIRST_COMPLETED)
    waited = 0.0
    while ended.done() and not writer.done() and waited < _patience(events.ending):
        await asyncio.wait((writer,), timeout=SETTLE_STEP)
        waited += SETTLE_STEP
    if not writer.done():
        return None
    # Cancelled from inside: aiohttp cancelled the drain future it was waiting on.
    return End.GONE if writer.cancelled() else writer.result()


async def _cancel(*tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _stopped(events: Subscription) -> End:
    return End.FINISHED if events.ending is None else End(events.ending.value)


async def _send_each(
    ws: web.WebSocketResponse, events: Subscription, messages: AsyncIterator[Event | None]
) -> End:
    async with aclosing(messages):
        try:
            async for event in messages:
                if events.closed:
                    return _stopped(events)
                if ws.closed:
                    return End.GONE
                if event is not None:  # aiohttp's heartbeat pings a WebSocket
                    with events.writing(event):
                        await ws.send_str(event.data)
        except ConnectionResetError:
            return End.GONE
    return _stopped(events)


async def _until_client_leaves(ws: web.WebSocketResponse) -> None:
    # Reading is what notices a close frame or a dropped connection; what the
    # client sends otherwise means nothing here.
    async for _ in ws:
        pass


async def _write_each(
    response: web.StreamResponse, events: Subscription, messages: AsyncIterator[Event | None]
) -> End:
    async with aclosing(messages):
        try:
            async for event in messages:
                if events.closed:
                    return _stopped(events)
                if event is None:
                    await response.write(SSE_PING)
                    continue
                with events.writing(event):
                    await response.write(_sse_message(event))
        except ConnectionResetError:
            return End.GONE
    return _stopped(events)


def _sse_message(event: Event) -> bytes:
    return f"id: {event_id(event.job)}\nevent: job\ndata: {event.data}\n\n".encode()


def _log_dropped(request: web.Request) -> None:
    log.info(
        "stream.dropped",
        extra={
            "action": "stream.dropped",
            "path": request.path,
            "job_id": request.match_info.get("id"),
        },
    )


def _cut(request: web.Request) -> None:
    """A client that will not even take the close: drop the connection and its buffer."""
    if request.transport is not None:
        request.transport.abort()
