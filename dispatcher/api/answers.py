"""JSON answers, each ending in a newline, so that `curl -s` leaves the prompt on its own line.

With orjson installed (the `speed` extra) answers are encoded by it, about ten
times faster; what they say is the same. Everything answered was stored
already, so it is plain JSON either way.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

try:
    import orjson
except ImportError:  # pragma: no cover - depends on what is installed
    orjson = None


def dumps(value: Any) -> str:
    if orjson is not None:
        try:
            return orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE).decode()
        except TypeError:
            pass  # what orjson does not take (an int past 64 bits): the standard library does
    return json.dumps(value) + "\n"


def json_answer(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=dumps)
