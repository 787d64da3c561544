"""Identifiers and timestamps.

Ids are time-ordered (48 bits of milliseconds, then 80 random bits, in
Crockford base32) so that "newest first" is "largest id first" and a list
cursor can be the last id seen.
"""

from __future__ import annotations

import functools
import math
import os
import secrets
import time
from datetime import UTC, datetime

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


_last = 0

# Random bits are read from the OS a few thousand ids at a time: one read per
# id was a system call on every job and every delivery.
_POOL_IDS = 4096
_pool = b""
_pool_at = 0


def _random80() -> int:
    global _pool, _pool_at
    if _pool_at >= len(_pool):
        _pool, _pool_at = secrets.token_bytes(10 * _POOL_IDS), 0
    chunk = _pool[_pool_at : _pool_at + 10]
    _pool_at += 10
    return int.from_bytes(chunk, "big")


def _forget_pool() -> None:
    global _pool
    _pool = b""  # a forked child must not repeat its parent's bits


os.register_at_fork(after_in_child=_forget_pool)


def new_id(prefix: str) -> str:
    global _last
    value = (int(time.time() * 1000) << 80) | _random80()
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


# 10000-01-01: past it no calendar date can be written with four digits.
_YEAR_10000 = 253_402_300_800


@functools.lru_cache(maxsize=64)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))


def rfc3339(ts: float | None) -> str | None:
    """Unix seconds as an RFC 3339 UTC string with milliseconds."""
    if ts is None:
        return None
    if 0 <= ts < _YEAR_10000:
        # What datetime.fromtimestamp does (microseconds rounded half to even),
        # with the date and time of day made once per second.
        fraction, whole = math.modf(ts)
        second, micro = int(whole), round(fraction * 1e6)
        if micro >= 1_000_000:
            second, micro = second + 1, micro - 1_000_000
        return f"{_utc_second(second)}{micro // 1000:03d}Z"
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
