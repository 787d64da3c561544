"""An async Python client for the dispatcher HTTP API (aiohttp).

    async with Client("http://127.0.0.1:8080", key) as client:
        job = await client.submit("echo", {"hello": "world"})
        job = await client.wait(job["id"], timeout=30)

Every method returns the API's JSON as plain dicts. An error answer raises
`ApiError` (its `status`, `title`, `detail` and `errors` come from the
problem+json body); a server that cannot be reached raises `Unreachable`, and one
that does not answer within the client's timeouts, or not as the API does,
raises `ClientError` (the root of all three).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from dispatcher import __version__
from dispatcher.client_admin import AdminMixin, _drop_none, _segment

FINISHED = frozenset({"succeeded", "failed", "cancelled"})
MAX_WAIT = 60  # the API holds a long-poll at most this many seconds
DEFAULT_TIMEOUT = 30.0  # seconds for one request, connect to last byte
DEFAULT_CONNECT_TIMEOUT = 10.0
# A stream may stay quiet for as long as its job runs, but the server sends a
# heartbeat every 15 s: three missed in a row means the connection is dead.
STREAM_READ_TIMEOUT = 45.0

Moment = datetime | str


class ClientError(Exception):
    """The dispatcher could not be reached or did not answer as expected."""

    status: int | None = None
    title: str = "Client Error"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class Unreachable(ClientError):
    """No connection to the server: refused, an unknown host, or no answer to the handshake."""


class ApiError(ClientError):
    """The API answered with an error (an RFC 9457 problem)."""

    def __init__(self, status: int, title: str, detail: str, body: Any = None) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.body = body
        self.errors: list[dict[str, Any]] = []
        if isinstance(body, dict) and isinstance(body.get("errors"), list):
            self.errors = body["errors"]

    def __str__(self) -> str:
        # The detail often is the one field's message already: say each thing once.
        fields = []
        for error in self.errors[:3]:
            if not isinstance(error, dict):
                continue
            message = str(error.get("message")).removeprefix("Value error, ")
            if message not in self.detail:
                fields.append(f"{error.get('field')}: {message}")
        suffix = f" ({'; '.join(fields)})" if fields else ""
        return f"{self.detail}{suffix} [HTTP {self.status}]"


def rfc3339(moment: Moment) -> str:
    """A datetime as an RFC 3339 UTC string (naive means UTC); a string is passed as is."""
    if isinstance(moment, str):
        return moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _query(values: Mapping[str, Any]) -> dict[str, str]:
    query = {}
    for name, value in _drop_none(values).items():
        if isinstance(value, datetime):
            value = rfc3339(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        query[name] = str(value)
    return query


class Client(AdminMixin):
    """A client for one dispatcher, speaking as one API key.

    Seconds, past which a call raises `ClientError`: `timeout` for each request
    (a long-poll adds the server's wait), `connect_timeout` for the connection,
    `stream_read_timeout` for a stream's silence (heartbeats count). The key and
    endpoint methods are `AdminMixin`'s."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        stream_read_timeout: float = STREAM_READ_TIMEOUT,
    ) -> None:
        if not key.isprintable():
            # Said now, and without the key: aiohttp would refuse it at the first request.
            raise ValueError("the API key holds characters an HTTP header cannot carry")
        self.base_url = base_url.rstrip("/")
        self._key = key
        self._session = session
        self._owns_session = session is None
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._stream_read_timeout = stream_read_timeout

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"  # never the key

    async def __aenter__(self) -> Client:
        self._ensure_session()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # Jobs

    async def submit(
        self,
        type: str,
        payload: Any = None,
        *,
        callback_url: str | None = None,
        endpoint_id: str | None = None,
        notify: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        deadline: Moment | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Submit a job; with `idempotency_key`, a repeat returns the first job."""
        body = {"type": type, "payload": payload}
        body |= _drop_none(
            {
                "callback_url": callback_url,
                "endpoint_id": endpoint_id,
                "notify": dict(notify) if notify is not None else None,
                "metadata": dict(metadata) if metadata is not None else None,
                "deadline": rfc3339(deadline) if deadline is not None else None,
            }
        )
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
        return await self._request("POST", "/v1/jobs", json=body, headers=headers)

    async def get(self, job_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/v1/jobs/{_segment(job_id)}")

    # The timeout is the server's long-poll budget, not a local cancel: asyncio.timeout
    # would drop the job we are about to be sent.
    async def wait(self, job_id: str, timeout: float = 60) -> dict[str, Any]:  # noqa: ASYNC109
        """The job once it has finished, or as it stands when `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, min(MAX_WAIT, deadline - time.monotonic()))
            job = await self._request(
                "GET",
                f"/v1/jobs/{_segment(job_id)}",
                params={"wait": f"{left:.3f}"},
                timeout=self._timeouts(total=left + self._timeout),
            )
            if job.get("status") in FINISHED or time.monotonic() >= deadline:
                return job

    async def stream(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        """The job now and at each change of status, from the SSE route, until it finishes."""
        path = f"/v1/jobs/{_segment(job_id)}/events"
        headers = {"Accept": "text/event-stream"}
        # No total: a stream lasts as long as its job. Silence is bounded by the read timeout.
        timeout = self._timeouts(total=None, read=self._stream_read_timeout)
        async with self._open("GET", path, headers=headers, timeout=timeout) as response:
            await _raise_for_problem(response)
            async for event in _sse_events(response.content):
                if event.name != "job":
                    continue
                job = _job_event(event.data)
                yield job
                if job.get("status") in FINISHED:
                    return

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return await self._request("POST", f"/v1/jobs/{_segment(job_id)}/cancel")

    async def list_jobs(self, **filters: Any) -> dict[str, Any]:
        """One page: `status`, `type`, `limit`, `cursor` → `{"items", "next_cursor"}`."""
        return await self._request("GET", "/v1/jobs", params=_query(filters))

    # Deliveries

    async def list_deliveries(
        self,
        status: str | None = None,
        since: Moment | None = None,
        until: Moment | None = None,
        job_id: str | None = None,
        endpoint_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        channel: str | None = None,
    ) -> dict[str, Any]:
        """One page of deliveries, newest first: `{"items", "next_cursor"}`."""
        params = _query(
            {
                "status": status,
                "since": since,
                "until": until,
                "job_id": job_id,
                "endpoint_id": endpoint_id,
                "channel": channel,
                "limit": limit,
                "cursor": cursor,
            }
        )
        return await self._request("GET", "/v1/deliveries", params=params)

    async def deliveries(self, **filters: Any) -> AsyncIterator[dict[str, Any]]:
        """Every delivery matching `filters` (as `list_deliveries`), page after page."""
        filters.pop("cursor", None)
        cursor = None
        while True:
            page = await self.list_deliveries(**filters, cursor=cursor)
            for item in page["items"]:
                yield item
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def show_delivery(self, delivery_id: str) -> dict[str, Any]:
        """The delivery with its `attempts`."""
        return await self._request("GET", f"/v1/deliveries/{_segment(delivery_id)}")

    async def replay(self, delivery_id: str) -> dict[str, Any]:
        return await self._request("POST", f"/v1/deliveries/{_segment(delivery_id)}/replay")

    async def replay_matching(
        self,
        status: str,
        since: Moment | None = None,
        until: Moment | None = None,
        endpoint_id: str | None = None,
        channel: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """`{"replayed": n}`, or `{"matched": n}` with `dry_run=True` (nothing changes)."""
        body = _drop_none(
            {
                "status": status,
                "since": rfc3339(since) if since is not None else None,
                "until": rfc3339(until) if until is not None else None,
                "endpoint_id": endpoint_id,
                "channel": channel,
            }
        )
        body["dry_run"] = dry_run
        return await self._request("POST", "/v1/deliveries/replay", json=body)

    # Keys and endpoints: inherited from AdminMixin (dispatcher/client_admin.py).

    # Plumbing

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"user-agent": f"dispatcher-client/{__version__}"}
            )
        return self._session

    def _timeouts(
        self, total: float | None = None, read: float | None = None
    ) -> aiohttp.ClientTimeout:
        # `connect` also covers waiting for a pooled connection; `sock_connect` is the
        # handshake: a host that drops SYNs fails at it, not only at the total.
        return aiohttp.ClientTimeout(
            total=total,
            connect=self._connect_timeout,
            sock_connect=self._connect_timeout,
            sock_read=read,
        )

    @contextlib.asynccontextmanager
    async def _open(
        self, method: str, path: str, **kwargs: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response to one request; transport failures and timeouts become ClientErrors."""
        headers = {"Authorization": f"Bearer {self._key}", **(kwargs.pop("headers", None) or {})}
        timeout = kwargs.setdefault("timeout", self._timeouts(total=self._timeout))
        session = self._ensure_session()
        try:
            async with session.request(
                method, self.base_url + path, headers=headers, **kwargs
            ) as response:
                yield response
        except aiohttp.ConnectionTimeoutError as exc:
            raise Unreachable(self._timed_out(exc, timeout)) from exc
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors too
            raise ClientError(self._timed_out(exc, timeout)) from exc
        except aiohttp.ClientConnectorError as exc:
            refused = isinstance(exc.os_error, ConnectionRefusedError)
            reason = "connection refused" if refused else exc.strerror
            raise Unreachable(f"cannot connect to {self.base_url}: {reason}") from exc
        except aiohttp.ClientError as exc:
            raise ClientError(f"{method} {self.base_url}{path} failed: {exc}") from exc

    def _timed_out(self, exc: TimeoutError, timeout: aiohttp.ClientTimeout) -> str:
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return f"cannot connect to {self.base_url} within {_seconds(timeout.sock_connect)}"
        if isinstance(exc, aiohttp.SocketTimeoutError):
            return f"nothing from {self.base_url} for {_seconds(timeout.sock_read)}"
        return f"no answer from {self.base_url} within {_seconds(timeout.total)}"

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        async with self._open(method, path, **kwargs) as response:
            await _raise_for_problem(response)
            if response.status == 204:
                return None
            try:
                return await response.json(content_type=None)
            except (ValueError, RecursionError) as exc:  # deep nesting is a RecursionError
                raise ClientError(f"{method} {path}: the answer is not JSON") from exc


def _seconds(value: float | None) -> str:
    return "the time allowed" if value is None else f"{value:g}s"


def _job_event(data: str) -> dict[str, Any]:
    try:
        job = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ClientError("a job event is not JSON") from exc
    if not isinstance(job, dict):
        raise ClientError("a job event is not a JSON object")
    return job


async def _raise_for_problem(response: aiohttp.ClientResponse) -> None:
    if response.status < 400:
        return
    text = await response.text(errors="replace")
    body: Any = None
    with contextlib.suppress(ValueError, RecursionError):
        body = json.loads(text)
    title = response.reason or "Error"
    detail = text.strip()[:200] or title
    if isinstance(body, dict):
        title = str(body.get("title") or title)
        detail = str(body.get("detail") or title)
    raise ApiError(response.status, title, detail, body)


@dataclass(frozen=True, slots=True)
class _Event:
    name: str
    data: str
    id: str | None


async def _sse_events(content: aiohttp.StreamReader) -> AsyncIterator[_Event]:
    """Server-sent events as the HTML spec reads them: fields until a blank line."""
    name, data, last_id = "", [], None
    async for raw in content:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield _Event(name or "message", "\n".join(data), last_id)
            name, data = "", []
            continue
        if line.startswith(":"):
            continue  # a comment, e.g. a keep-alive
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id" and "\0" not in value:
            last_id = value
