"""Example job handlers. Run the service with them:

    DISPATCHER_HANDLERS=examples.handlers dispatcher serve

then submit `{"type": "word_count", "payload": {"text": "a b a"}}`.
"""

from __future__ import annotations

import hashlib
from collections import Counter

from dispatcher import Retry, handler

_busy_until_attempt: dict[str, int] = {}


@handler("word_count", timeout=10)
async def word_count(payload: dict) -> dict:
    words = str(payload.get("text", "")).split()
    return {"words": len(words), "top": Counter(words).most_common(3)}


@handler("digest", timeout=30)
def digest(payload: dict) -> dict:
    """A plain def: dispatcher runs it in a thread, so CPU work does not block the API."""
    data = str(payload.get("data", "")).encode()
    return {"sha256": hashlib.sha256(data).hexdigest()}


@handler("eventually", retries=5)
async def eventually(payload: dict) -> dict:
    """Asks to be run again (after 1 s) until its third run, to show `Retry`."""
    key = str(payload.get("key", "default"))
    _busy_until_attempt[key] = _busy_until_attempt.get(key, 0) + 1
    if _busy_until_attempt[key] < 3:
        raise Retry(after=1)
    return {"runs": _busy_until_attempt[key]}
