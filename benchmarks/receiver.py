"""The webhook receiver every phase posts to: counts arrivals and, for dispatcher
webhooks, the time from the job's finish to the arrival. Run as its own process:

    python -m benchmarks.receiver PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import datetime

from aiohttp import web

STATE = web.AppKey("state", dict)


def _fresh() -> dict:
    return {"count": 0, "first": None, "last": None, "latencies": [], "waiters": []}


async def hook(request: web.Request) -> web.Response:
    body = await request.read()
    arrived = time.time()
    state = request.app[STATE]
    state["count"] += 1
    state["first"] = state["first"] or arrived
    state["last"] = arrived
    finished = _finished_at(body)
    if finished is not None:
        state["latencies"].append(arrived - finished)
    for target, event in state["waiters"]:
        if state["count"] >= target:
            event.set()
    return web.Response(status=204)


def _finished_at(body: bytes) -> float | None:
    try:
        stamp = json.loads(body)["data"]["finished_at"]
    except (ValueError, KeyError, TypeError):
        return None
    return datetime.fromisoformat(stamp).timestamp() if stamp else None


async def wait(request: web.Request) -> web.Response:
    """Answers once `n` webhooks arrived, or after `timeout` seconds, with the figures."""
    state = request.app[STATE]
    target = int(request.query["n"])
    event = asyncio.Event()
    entry = (target, event)
    state["waiters"].append(entry)
    if state["count"] >= target:
        event.set()
    try:
        async with asyncio.timeout(float(request.query.get("timeout", "600"))):
            await event.wait()
    except TimeoutError:
        pass
    finally:
        state["waiters"].remove(entry)
    return web.json_response({k: state[k] for k in ("count", "first", "last", "latencies")})


async def reset(request: web.Request) -> web.Response:
    request.app[STATE].update(_fresh())
    return web.Response(status=204)


def main() -> None:
    app = web.Application()
    app[STATE] = _fresh()
    app.router.add_post("/hook", hook)
    app.router.add_get("/wait", wait)
    app.router.add_post("/reset", reset)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
