"""Service routes that need no key: liveness, readiness and metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web

from dispatcher.api.answers import json_answer
from dispatcher.api.context import services
from dispatcher.api.problems import problem
from dispatcher.errors import STORE_RETRY_AFTER, StoreUnavailable
from dispatcher.ids import now
from dispatcher.metrics import CONTENT_TYPE

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_answer({"status": "ok"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text: counts kept as work happens, and the store's counts read now."""
    svc = services(request)
    at = now()
    stats = await svc.store.stats(at)
    body = svc.metrics.render(stats, svc.hub.counts(), at)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


# Past this the database counts as not answering, whatever it is waiting for.
READY_TIMEOUT = 5.0


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready when the database can be written, not only read: a full disk, a read-only
    file or a lock held elsewhere makes submissions fail, so it fails this too."""
    headers = {"Retry-After": str(STORE_RETRY_AFTER)}
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await services(request).store.check_writable()
    except StoreUnavailable as exc:
        return problem(503, "Service Unavailable", exc.detail, headers)
    except TimeoutError:
        detail = f"the database did not take a write within {READY_TIMEOUT:g} s"
        return problem(503, "Service Unavailable", detail, headers)
    except Exception as exc:
        detail = f"the database cannot be reached: {type(exc).__name__}"
        return problem(503, "Service Unavailable", detail, headers)
    return json_answer({"status": "ready"})
