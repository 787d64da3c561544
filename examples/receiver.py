"""A webhook receiver that verifies dispatcher's signatures before trusting a body.

    python examples/receiver.py whsec_... 9000

Any Standard Webhooks library verifies these webhooks too; this one uses ours.
"""

from __future__ import annotations

import sys

from aiohttp import web

from dispatcher.webhooks import WEBHOOK, require_signature


def build(secret: str) -> web.Application:
    @require_signature(secret)
    async def hook(request: web.Request) -> web.Response:
        event = request[WEBHOOK]
        job = event["data"]
        # webhook-id is the same on every retry and replay: use it to drop duplicates.
        print(request.headers["webhook-id"], event["type"], job["id"], job["result"], flush=True)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    return app


if __name__ == "__main__":
    web.run_app(build(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]))
