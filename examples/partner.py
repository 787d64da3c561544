"""An integration partner's receiver for an ed25519 endpoint: it holds only the public key.

    dispatcher endpoints create https://partner.example/hook --ed25519   # prints whpk_...
    python examples/partner.py whpk_... 9000

Every route sits behind `signature_middleware`: a forged, altered or stale
webhook gets `401` before any handler runs. A webhook's `webhook-id` is the
same on every retry and replay, so a repeat is acknowledged and not acted on
twice.
"""

from __future__ import annotations

import sys
from collections import OrderedDict

from aiohttp import web

from dispatcher.webhooks import WEBHOOK, signature_middleware

# Ids remembered to drop repeats; a real partner would keep them in its database.
REMEMBERED = 10_000


def build(public_key: str) -> web.Application:
    seen: OrderedDict[str, None] = OrderedDict()

    async def hook(request: web.Request) -> web.Response:
        event = request[WEBHOOK]
        webhook_id = request.headers["webhook-id"]
        if webhook_id in seen:
            print(webhook_id, "repeat", flush=True)
            return web.Response(status=204)
        seen[webhook_id] = None
        if len(seen) > REMEMBERED:
            seen.popitem(last=False)
        print(webhook_id, event["type"], event["data"]["id"], flush=True)
        return web.Response(status=204)

    app = web.Application(middlewares=[signature_middleware(public_key)])
    app.router.add_post("/hook", hook)
    return app


if __name__ == "__main__":
    web.run_app(build(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), print=None)
