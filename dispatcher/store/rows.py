"""What both dialects share to turn rows into pages and values into columns."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from dispatcher.store.records import Page


def dump_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def page_of(items: Sequence[Any], limit: int, cursor_of: Callable[[Any], str]) -> Page:
    """The first `limit` items, and a cursor to the rest if one more was read."""
    items = list(items)
    if len(items) > limit:
        items = items[:limit]
        return Page(items, cursor_of(items[-1]))
    return Page(items, None)


def cursor_of_key(row: Any) -> str:
    """Where a listing of keys goes on: after this key, made then, newest first."""
    return f"{row['created_at']!r}/{row['prefix']}"


_KEY_CURSOR = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,20})?)/([A-Za-z0-9_-]{1,64})", re.ASCII)


def valid_key_cursor(value: str) -> bool:
    return _KEY_CURSOR.fullmatch(value) is not None


def key_cursor(before: str | None) -> tuple[float | None, str | None]:
    """The key a cursor from `cursor_of_key` names (made when, and its prefix)."""
    found = None if before is None else _KEY_CURSOR.fullmatch(before)
    if found is None:
        return None, None
    return float(found[1]), found[2]
