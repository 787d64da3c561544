"""The webhook channel: one signed POST per attempt, through one guarded session."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable, Mapping

import aiohttp

from dispatcher import __version__
from dispatcher.delivery.policy import AttemptResult
from dispatcher.delivery.secrets import Signing
from dispatcher.store.records import Delivery, DueDelivery
from dispatcher.webhooks import sign

MAX_RESPONSE_BYTES = 4096


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    # isdigit alone takes "²" and other digits that float() does not.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


async def read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The first `limit` bytes of a body; the rest is never read (the connection is dropped)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await response.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


SigningFor = Callable[[Delivery], Awaitable[Signing]]


class WebhookSender:
    def __init__(
        self, session: aiohttp.ClientSession, timeout: float, signing_for: SigningFor
    ) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._timeout_seconds = timeout
        self._signing_for = signing_for

    async def send(self, due: DueDelivery) -> AttemptResult:
        delivery = due.delivery
        signing = await self._signing_for(delivery)
        if not signing.secrets:
            return AttemptResult(ok=False, error="no signing secret for this delivery")
        headers = {
            # An endpoint's own headers first: ours can never be replaced.
            **signing.headers,
            "content-type": "application/json",
            "user-agent": f"dispatcher/{__version__}",
            **sign(signing.secrets, delivery.id, int(time.time()), due.body),
        }
        try:
            async with self._session.post(
                signing.url or delivery.target,
                data=due.body,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                body = await read_at_most(response, MAX_RESPONSE_BYTES)
                return http_result(response.status, response.headers, body)
        except TimeoutError:
            return AttemptResult(ok=False, error=f"timed out after {self._timeout_seconds:g}s")
        except aiohttp.ClientError as exc:
            return AttemptResult(ok=False, error=str(exc) or type(exc).__name__)
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            return AttemptResult(ok=False, error=f"{type(exc).__name__}: {exc}")


def http_result(status: int, headers: Mapping[str, str], body: bytes) -> AttemptResult:
    """An HTTP answer as an attempt's result: 2xx succeeds, 3xx is not followed, 410 stops."""
    text = body[:MAX_RESPONSE_BYTES].decode("utf-8", errors="replace")
    if 200 <= status < 300:
        return AttemptResult(ok=True, status_code=status, response_body=text)
    if 300 <= status < 400:
        error = f"HTTP {status}: redirects are not followed"
    else:
        error = f"HTTP {status}"
    retry_after = None
    if status in (429, 503):
        retry_after = parse_retry_after(headers.get("Retry-After"))
    return AttemptResult(
        ok=False,
        status_code=status,
        error=error,
        response_body=text,
        retry_after=retry_after,
        gone=status == 410,
    )
