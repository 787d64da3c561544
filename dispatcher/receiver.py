"""Receiving webhooks with aiohttp: the decorator and middleware a partner's receiver
uses, and the tools behind `dispatcher listen` and `dispatcher verify`.

All of them check webhooks with `dispatcher.webhooks`, exactly as a partner's
own receiver would; the tools say in one line what they found.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from dispatcher.webhooks import Key, WebhookVerificationError, parse_keys, verify, verify_parsed

log = logging.getLogger(__name__)

# aiohttp 3.14 warns on plain string keys in request storage, so the verified
# payload lives under a typed key: `request[WEBHOOK]`.
WEBHOOK: web.RequestKey[Any] = web.RequestKey("webhook", object)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A header name is an RFC 9110 token; a request line has spaces before any colon.
_HEADER_LINE = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+:")
_REQUEST_LINE = re.compile(rb"^[A-Z]+ \S+ HTTP/\d(\.\d)?$")


def require_signature(
    secret: str | Sequence[str], *, tolerance: float = 300
) -> Callable[[Handler], Handler]:
    """Decorate an aiohttp handler so it only runs for verified webhooks.

    The handler finds the payload in `request[WEBHOOK]`; anything else gets a
    401 problem+json. The secret is parsed here so a bad one fails at startup.
    """
    keys = parse_keys(secret)

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def verified(request: web.Request) -> web.StreamResponse:
            return await _call_verified(request, handler, keys, tolerance)

        return verified

    return decorate


def signature_middleware(
    secret: str | Sequence[str], *, tolerance: float = 300
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """An aiohttp middleware that does what `require_signature` does, for every route."""
    keys = parse_keys(secret)

    @web.middleware
    async def webhook_signature(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await _call_verified(request, handler, keys, tolerance)

    return webhook_signature


async def _call_verified(
    request: web.Request, handler: Handler, keys: list[Key], tolerance: float
) -> web.StreamResponse:
    body = await request.read()
    try:
        payload = verify_parsed(keys, request.headers, body, tolerance, None)
    except WebhookVerificationError as exc:
        log.info("webhook_rejected: %s", exc, extra={"action": "webhook_rejected"})
        problem = {
            "type": "about:blank",
            "title": "Unauthorized",
            "status": 401,
            "detail": str(exc),
        }
        return web.json_response(problem, status=401, content_type="application/problem+json")
    request[WEBHOOK] = payload
    return await handler(request)


class RawRequestError(ValueError):
    """The text is not an HTTP request: request line, headers, blank line, body."""


@dataclass(frozen=True)
class Outcome:
    """What one webhook turned out to be.

    `type` and `event` (the parsed body) are None unless it verified: an
    unverified body is anyone's text, and what it says is neither trusted nor
    shown. `request` is the raw request a receiver got, as `parse_request` reads it.
    """

    webhook_id: str
    type: str | None
    verified: bool
    reason: str = ""
    event: Any = field(default=None, repr=False)
    request: bytes = field(default=b"", repr=False)

    def line(self) -> str:
        if not self.verified:
            return f"{self.webhook_id}  not verified ({self.reason})"
        return f"{self.webhook_id}  {self.type or '-'}  verified"


def check(
    secret: str | Sequence[str], headers: Any, body: bytes, *, tolerance: float = 300
) -> Outcome:
    """Verify one webhook. A secret that cannot be parsed raises ValueError."""
    webhook_id = _one_line(headers.get("webhook-id") or "-")
    try:
        event = verify(secret, headers, body, tolerance=tolerance)
    except WebhookVerificationError as exc:
        return Outcome(webhook_id, None, False, _one_line(str(exc)))
    return Outcome(webhook_id, _event_type(event), True, event=event)


def check_secret(secret: str | Sequence[str]) -> None:
    """Raise ValueError now for a secret `verify` could not use, not at the first webhook."""
    # The secret is parsed first; then only the (absent) headers can be wrong.
    with contextlib.suppress(WebhookVerificationError):
        verify(secret, {}, b"")


def receiver_app(
    secret: str | Sequence[str], report: Callable[[Outcome], None], *, tolerance: float = 300
) -> web.Application:
    """An app that answers 200 to a verified webhook on any path and 401 to anything else."""
    check_secret(secret)

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        outcome = check(secret, request.headers, body, tolerance=tolerance)
        report(replace(outcome, request=raw_request(request, body)))
        if outcome.verified:
            return web.json_response({"received": outcome.webhook_id})
        problem = {
            "type": "about:blank",
            "title": "Unauthorized",
            "status": 401,
            "detail": outcome.reason,
        }
        return web.json_response(problem, status=401, content_type="application/problem+json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receive)
    return app


def raw_request(request: web.BaseRequest, body: bytes) -> bytes:
    """The request as it came (request line, headers, blank line, body), for `parse_request`.

    The body is the one read, whole: a chunked request is written with its length instead.
    """
    version = request.version
    lines = [f"{request.method} {request.raw_path} HTTP/{version.major}.{version.minor}".encode()]
    framing = (b"content-length", b"transfer-encoding")
    lines += [
        name + b": " + value for name, value in request.raw_headers if name.lower() not in framing
    ]
    lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def parse_request(raw: bytes) -> tuple[dict[str, str], bytes]:
    """The headers (names lower-cased, the first of repeats) and the body of a raw request."""
    head, body = _split_head(raw)
    lines = head.splitlines()
    if lines and not _HEADER_LINE.match(lines[0]):
        if not _REQUEST_LINE.match(lines[0].strip()):
            raise RawRequestError("the first line is not an HTTP request line")
        lines = lines[1:]
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not _HEADER_LINE.match(line):
            raise RawRequestError(f"not a header line: {_one_line(line.decode(errors='replace'))}")
        headers.setdefault(name.decode().lower(), value.decode("latin-1").strip())
    return headers, _framed_body(headers, body)


def _split_head(raw: bytes) -> tuple[bytes, bytes]:
    raw = raw.lstrip(b"\r\n")
    ends = [(raw.find(sep), sep) for sep in (b"\r\n\r\n", b"\n\n") if raw.find(sep) >= 0]
    if not raw:
        raise RawRequestError("no request on stdin")
    if not ends:
        raise RawRequestError("no blank line between the headers and the body")
    index, sep = min(ends)
    return raw[:index], raw[index + len(sep) :]


def _framed_body(headers: dict[str, str], body: bytes) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _dechunk(body)
    length = headers.get("content-length")
    if length is None:
        return body
    if not length.isdigit():
        raise RawRequestError("the Content-Length header is not a number")
    if len(body) < int(length):
        raise RawRequestError(f"the body is shorter than Content-Length ({len(body)} < {length})")
    # Editors add a final newline that the sender never signed.
    return body[: int(length)]


def _dechunk(body: bytes) -> bytes:
    out, rest = bytearray(), body
    while True:
        size_line, sep, rest = rest.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError:
            raise RawRequestError("malformed chunked body") from None
        if not sep or len(rest) < size:
            raise RawRequestError("the chunked body is cut short")
        if size == 0:
            return bytes(out)
        out += rest[:size]
        rest = rest[size:].removeprefix(b"\r\n")


def _event_type(event: Any) -> str:
    kind = event.get("type") if isinstance(event, dict) else None
    return _one_line(kind) if isinstance(kind, str) and kind else "-"


def _one_line(text: str) -> str:
    # What a sender puts in a header ends up on a terminal: no escapes, no line breaks.
    printable = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(printable.split())[:200] or "-"
