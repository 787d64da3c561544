"""Service routes that need no key: liveness and readiness."""

from __future__ import annotations

from aiohttp import web

from dispatcher.api.answers import json_answer
from dispatcher.api.context import services
from dispatcher.api.problems import problem

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_answer({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    try:
        await services(request).store.ping()
    except Exception:
        return problem(503, "Service Unavailable", "the database cannot be reached")
    return json_answer({"status": "ready"})
