"""Who is calling: every /v1 route needs a valid key, by header or (streams) `?token=`."""

from __future__ import annotations

import re

from aiohttp import web

from dispatcher.api.context import PRINCIPAL, services
from dispatcher.api.problems import Handler
from dispatcher.auth import Principal
from dispatcher.errors import Forbidden, Unauthorized

# Browsers cannot set headers on these three, so they alone take ?token=.
STREAMS = re.compile(r"/v1/jobs/[^/]+/(ws|events)|/v1/events/ws")


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if STREAMS.fullmatch(request.path):
        return request.query.get("token")
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/v1/"):
        return await handler(request)
    svc = services(request)
    token = _token(request)
    found = await svc.auth.authenticate(token) if token else None
    if found is None:
        raise Unauthorized()
    request[PRINCIPAL] = found
    with svc.in_progress.held(found):
        return await handler(request)


def require_admin(who: Principal) -> None:
    if not who.admin:
        raise Forbidden()
