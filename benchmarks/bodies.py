"""What every phase sends: a ~1 KB JSON body, signed as the dispatcher signs webhooks."""

from __future__ import annotations

import json
import time

from dispatcher.ids import new_id
from dispatcher.webhooks import sign

# About 1 KB once wrapped in a job or an event.
PAYLOAD = {"order": 1234, "note": "x" * 900}


def event(index: int) -> bytes:
    return json.dumps({"type": "bench.event", "data": {"n": index, **PAYLOAD}}).encode()


def signed(secret: str, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        **sign(secret, new_id("msg"), int(time.time()), body),
    }
