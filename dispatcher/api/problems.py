"""Every error answer is `application/problem+json` (RFC 9457), unknown routes included."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from dispatcher.api.answers import dumps
from dispatcher.errors import DispatcherError, TooManyRequests, Unavailable

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return web.Response(
        status=status,
        text=dumps(body),
        content_type="application/problem+json",
        headers=headers,
    )


def from_error(error: DispatcherError) -> web.Response:
    headers = None
    if isinstance(error, Unavailable):
        headers = {"Retry-After": str(error.retry_after)}
    elif isinstance(error, TooManyRequests):
        headers = {"Retry-After": "1"}
    return problem(error.status, error.title, error.detail, headers, **error.extra)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DispatcherError as error:
        return from_error(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        detail = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        return problem(exc.status, exc.reason, detail, headers)
    except Exception:
        log.exception("api.unhandled", extra={"action": "api.unhandled", "path": request.path})
        return problem(500, "Internal Server Error", "The server failed to handle the request.")
