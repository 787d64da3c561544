"""Who is calling: every /v1 route needs a valid key, by header or (streams) `?token=`."""

from __future__ import annotations

from aiohttp import web

from dispatcher.api.context import PRINCIPAL, services
from dispatcher.api.problems import Handler
from dispatcher.auth import Principal
from dispatcher.errors import Forbidden, Unauthorized

# Browsers cannot set headers on these, so they take the key as ?token= too.
TOKEN_IN_QUERY = ("/ws", "/events")


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.path.endswith(TOKEN_IN_QUERY):
        return request.query.get("token")
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/v1/"):
        return await handler(request)
    token = _token(request)
    found = await services(request).auth.authenticate(token) if token else None
    if found is None:
        raise Unauthorized()
    request[PRINCIPAL] = found
    return await handler(request)


def require_admin(who: Principal) -> None:
    if not who.admin:
        raise Forbidden()
