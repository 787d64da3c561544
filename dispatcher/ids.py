"""Identifiers and timestamps.

Ids are time-ordered (48 bits of milliseconds, then 80 random bits, in
Crockford base32) so that "newest first" is "largest id first" and a list
cursor can be the last id seen.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


_last = 0


def new_id(prefix: str) -> str:
    global _last
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    # Strictly increasing within a process, so ids made in the same
    # millisecond still list in the order they were made.
    value = _last = max(value, _last + 1)
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def is_id(value: str, prefix: str) -> bool:
    head, _, body = value.partition("_")
    return head == prefix and len(body) == 26 and all(c in _ALPHABET for c in body)


def now() -> float:
    return time.time()


def rfc3339(ts: float | None) -> str | None:
    """Unix seconds as an RFC 3339 UTC string with milliseconds."""
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
