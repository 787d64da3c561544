"""What the command line accepts: argument types that fail in one line, never a traceback.

argparse turns only ValueError, TypeError and ArgumentTypeError from a type
function into a usage error; anything else (an OverflowError from a date far
out of range) would escape as a traceback. So each type here catches what its
parsing can raise and says what was wrong with the text.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dispatcher.client import rfc3339

DURATION = re.compile(r"^\s*([0-9]{1,12})\s*([smhdw])\s*$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# A request that takes longer than a day is not waiting for an answer any more.
MAX_TIMEOUT = 86_400.0


class Failure(Exception):
    """A one-line reason the command could not do what it was asked."""

    def __init__(self, reason: str, code: int = 1) -> None:
        super().__init__(reason)
        self.code = code


def moment(text: str) -> str:
    """`30m`, `2h`, `7d` (that long ago) or an RFC 3339 time, as RFC 3339 UTC."""
    found = DURATION.match(text)
    if found:
        try:
            return rfc3339(datetime.now(UTC) - timedelta(**{UNITS[found[2]]: int(found[1])}))
        except OverflowError:
            raise argparse.ArgumentTypeError(
                f"{text.strip()!r} reaches back before the year 1"
            ) from None
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration like 30m, 2h, 7d nor an RFC 3339 time with an offset"
        )
    try:
        return rfc3339(parsed)
    except OverflowError:
        # 9999-12-31T23:00:00-05:00 is a valid time whose UTC year is 10000.
        raise argparse.ArgumentTypeError(f"{text!r} is out of range in UTC") from None


def port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def positive(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return int(text)


def seconds(text: str) -> float:
    """A number of seconds above zero and at most a day (`--timeout`, DISPATCHER_TIMEOUT)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_TIMEOUT:  # also false for nan
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds above 0 and at most {MAX_TIMEOUT:g}"
        )
    return value


def tolerance(text: str) -> float:
    """Seconds a webhook-timestamp may be off: a finite number, zero or more."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    # nan would compare false against every age and so accept any timestamp.
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds, 0 or more")
    return value


def json_value(text: str) -> Any:
    """JSON text, or `@FILE` for a file's (`@-` for standard input)."""
    if text.startswith("@"):
        name = text[1:]
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise argparse.ArgumentTypeError(f"cannot read {name}: {reason}") from None
    try:
        return json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError) as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None


def _not_json(name: str) -> Any:
    # Python reads NaN and Infinity; JSON, and so the API, does not.
    raise ValueError(f"{name} is not a JSON value")
