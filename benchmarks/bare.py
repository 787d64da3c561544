"""The baselines: no persistence at all, only aiohttp.

- `signed_posts`: an aiohttp client posting signed 1 KB bodies to the receiver.
- A bare server answering `202` to `POST /v1/jobs` (run as `python -m benchmarks.bare PORT`).
"""

from __future__ import annotations

import sys

from aiohttp import web

from benchmarks.bodies import event, signed
from benchmarks.load import Sent, post_all, received, reset


async def signed_posts(receiver: str, secret: str, count: int, concurrency: int) -> float:
    """Deliveries per second, timed to the last one received."""
    await reset(receiver)

    def request(index: int) -> tuple[str, bytes, dict[str, str]]:
        body = event(index)
        return f"{receiver}/hook", body, signed(secret, body)

    sent: Sent = await post_all(count, concurrency, request, expect=204)
    figures = await received(receiver, count)
    if sent.unexpected or figures["count"] < count:
        raise RuntimeError(f"bare: {figures['count']}/{count} arrived")
    return count / (figures["last"] - sent.started)


async def _accept(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"id": "job_x", "status": "queued"}, status=202)


def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/jobs", _accept)
    app.router.add_get("/readyz", lambda request: _ok())
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


async def _ok() -> web.Response:
    return web.Response(text="ok")


if __name__ == "__main__":
    main()
